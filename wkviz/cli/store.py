"""``python -m wkviz store verify PATH [--repair]``: check every tile of a kernel store against its digest.

Prints one line per bad tile and a summary on stdout. Exit status: 0 when every finished tile matches its
digest, 1 when damage was found (with ``--repair`` the bad tiles are then marked missing, so the next run of the
same request with the same ``--store`` recomputes exactly them), 2 when ``PATH`` is not a kernel store.
"""

from __future__ import annotations

import sys

__all__ = ["add_store_parser", "run_store_verify"]


def add_store_parser(subparsers):
    """Register ``store`` (with its action ``verify``) on an ``argparse`` sub-parser collection."""
    s = subparsers.add_parser("store", help="check (and repair) an on-disk kernel store")
    actions = s.add_subparsers(dest="store_command", required=True)
    v = actions.add_parser("verify", help="check every tile against its digest; exit 1 if any is damaged")
    v.add_argument("path", help="the store's folder (what was passed as --store)")
    v.add_argument("--repair", action="store_true",
                   help="mark damaged tiles missing, so the next run of the same request recomputes them")
    v.set_defaults(func=run_store_verify)
    return s


def run_store_verify(args, out=None) -> int:
    """Verify the store at ``args.path`` (and repair it with ``args.repair``); returns the exit status."""
    from ..scale.store import KernelStore

    out = out if out is not None else sys.stdout
    store = KernelStore.load(args.path)
    bad = store.check_tiles()
    for (bi, bj), problem in bad:
        print(f"tile ({bi}, {bj}): {problem}", file=out)
    bad_tiles = {t for t, _ in bad}
    missing = set(store.missing_tiles())
    shape = (f"{store.tile_size} × {store.tile_size} structures" if store.centers_B is None else
             f"{store.tile_size} structures × {store.tile_size_B} environments")
    summary = (f"{store.path}: {store.n_tiles} tiles of {shape} "
               f"({', '.join(store.kinds)}), {store.n_tiles - len(missing | bad_tiles)} good, {len(bad)} bad, "
               f"{len(missing - bad_tiles)} not computed yet")
    if not bad:
        print(f"{summary}: ok", file=out)
        return 0
    if args.repair:
        store.repair([t for t, _ in bad])
        print(f"{summary}; marked the {len(bad)} bad tile(s) missing: run the same request again with --store "
              f"{store.path} to recompute them", file=out)
    else:
        print(f"{summary}; run `python -m wkviz store verify {store.path} --repair`, then the same request again "
              f"with --store {store.path}, to recompute them", file=out)
    return 1
