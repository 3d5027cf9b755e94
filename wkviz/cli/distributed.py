"""``python -m wkviz kernels … --scheduler ADDRESS|local --workers N --store PATH``: tiles on Dask.

The ``kernels`` sub-command (:mod:`wkviz.cli.kernels`) adds the flags with :func:`add_distributed_flags` and hands
the request to :func:`compute_distributed` when ``--scheduler`` or ``--store`` is given (``--store`` alone: the
tiles run one after another in this process, into the store); everything else (reading structures, the
hyperparameter flags, ``--out``, error lines) stays with the ``kernels`` sub-command. ``fit`` and
``learning-curve`` add the same flags for their sparse models' environment kernels (:mod:`wkviz.cli.sparse`);
:func:`tile_options` reads and checks them for all three.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .common import ProgressLine, format_bytes, format_seconds, note

__all__ = ["add_distributed_flags", "compute_distributed", "tile_options", "tiles_where"]


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler --workers --store --tile-size`` (``kernels``, and ``fit``/``learning-curve`` for the
    kernels of their sparse models)."""
    g = parser.add_argument_group("distributed tiles (dask.distributed)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS|local",
                   help="compute kernel tiles on Dask: 'local' starts a LocalCluster of --workers processes, "
                        "otherwise the address of a running scheduler (e.g. tcp://host:8786)")
    g.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local cluster, one thread each (default %(default)s)")
    g.add_argument("--store", default=None, metavar="PATH",
                   help="directory of the on-disk tile store (zarr); an interrupted run resumes from it and a "
                        "later run of the same request reuses it (every tile is checked against its digest first; "
                        "damaged tiles are recomputed). Without --scheduler the tiles run in this process")
    g.add_argument("--tile-size", type=int, default=None,
                   help="structures per tile side for a new store (default: chosen from the request size)")


def tile_options(args, flag_needs: str | None = None) -> dict | None:
    """The tiled route asked for on the command line, its flags checked; None without ``--store`` and
    ``--scheduler`` (the kernels are then computed in memory).

    Parameters
    ----------
    args : argparse.Namespace
        From a parser that went through :func:`add_distributed_flags`.
    flag_needs : str, optional
        What the tiled route needs that is missing (e.g. ``"--active-environments M"``): then ``--store``,
        ``--scheduler`` and ``--tile-size`` are refused, naming it.

    Returns
    -------
    dict or None
        ``store`` (path or None: a temporary store), ``scheduler`` (an address, ``"local"``, or None: in this
        process), ``workers``, ``tile_size`` (None: chosen from the request).

    Raises
    ------
    InputError
        ``--workers`` or ``--tile-size`` below 1, ``--tile-size`` without ``--store`` or ``--scheduler``, or any
        of them when ``flag_needs`` names what is missing.
    """
    store, scheduler = getattr(args, "store", None), getattr(args, "scheduler", None)
    tile_size = getattr(args, "tile_size", None)
    given = [f for f, v in (("--store", store), ("--scheduler", scheduler), ("--tile-size", tile_size)) if v]
    if given and flag_needs:
        raise InputError(f"{given[0]} computes kernel tiles for {flag_needs} only; add {flag_needs} or drop "
                         f"{' '.join(given)}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if tile_size is not None and tile_size < 1:
        raise InputError(f"--tile-size must be a positive number of structures, got {tile_size}")
    if not (store or scheduler):
        if tile_size is not None:
            raise InputError("--tile-size sets the tiles of a --store or --scheduler run; add --store PATH, or "
                             "drop --tile-size")
        return None
    return {"store": store, "scheduler": scheduler, "workers": args.workers, "tile_size": tile_size}


def tiles_where(scheduler) -> str:
    """Where the tiles run, for a progress note (``scheduler`` as given; None: in this process)."""
    from ..scale.distributed import IN_PROCESS

    scheduler = scheduler or IN_PROCESS
    return {"local": "on a local cluster", IN_PROCESS: "in this process (no --scheduler)"}.get(
        str(scheduler).lower(), f"on scheduler {scheduler}")


def compute_distributed(args, frames_a, frames_b, hypers) -> int:
    """Run the ``kernels`` request of parsed ``args`` as tiles (on Dask, or in this process when only ``--store``
    is given) and write ``args.out``.

    Parameters
    ----------
    args : argparse.Namespace
        Needs ``scheduler``, ``workers``, ``store``, ``tile_size``, ``out``; reads ``tensor_rank``,
        ``atomic`` and ``memory_budget`` (GiB) when present.
    frames_a, frames_b : list of ase.Atoms
        ``frames_b=None`` for the symmetric request.
    hypers : Hypers

    Returns
    -------
    int
        Exit status (0). Errors are raised as :class:`~wkviz.errors.WkvizError` for ``main`` to print.
    """
    from ..engine.kernels import WignerKernel
    from ..scale.distributed import IN_PROCESS, compute_tiles

    flag = "--scheduler" if args.scheduler else "--store"
    if getattr(args, "atomic", False):
        raise InputError(f"atomic kernels are not tiled; drop --atomic or compute without {flag}")
    tile_options(args)
    ranks = tuple(sorted(set(getattr(args, "tensor_rank", None) or [0]) - {0}))
    budget = int(float(getattr(args, "memory_budget", 2.0)) * 2**30)

    n_b = len(frames_b) if frames_b is not None else len(frames_a)
    scheduler = args.scheduler or IN_PROCESS
    where = tiles_where(scheduler)
    # the whole request's estimate: its time is the work of all tiles at this machine's rate, its disk the store
    # (each tile's own memory is checked by the engine of the worker that computes it)
    est = WignerKernel(hypers, memory_budget=budget).estimate(frames_a, frames_b, tensor_rank=ranks,
                                                              timed=True)
    print(f"wkviz kernels: {len(frames_a)} × {n_b} structures as tiles {where}"
          f"{f', store {args.store}' if args.store else ''}; about {format_seconds(est['seconds'])} of kernel "
          f"work at this machine's rate and {format_bytes(est['disk_bytes'])} of kernels on disk", file=sys.stderr)
    run = compute_tiles(frames_a, frames_b, hypers=hypers, store=args.store, scheduler=scheduler,
                        n_workers=args.workers, tile_size=args.tile_size, tensor_rank=ranks, memory_budget=budget,
                        progress=ProgressLine("tiles"), note=note)
    print(f"tiles: {run.tiles_computed} computed, {run.tiles_reused} reused of {run.tiles_total} "
          f"on {run.workers} worker thread(s) in {run.seconds:.1f} s", file=sys.stderr)
    if run.result is None:
        print(f"the kernel ({run.store.output_bytes() / 2**30:.2f} GiB) exceeds --memory-budget, so {args.out} "
              f"was not written; it is complete in the store {args.store} (wkviz.scale.store.KernelStore)",
              file=sys.stderr)
        return 0
    run.result.to_npz(args.out)
    print(f"wrote {args.out}: K {run.result.K.shape}", file=sys.stderr)
    return 0
