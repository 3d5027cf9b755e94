"""The command line, ``python -m wkviz <sub-command>`` (contract in DESIGN.md §3)."""
