"""Structures: reading, validation, targets, splits and the bundled sample data."""

from .core import *  # noqa: F401,F403
