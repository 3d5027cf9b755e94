"""What checking a kernel-store tile costs: a verified read against a plain read of one 256 × 256 tile.

A tile of a ν ≤ 4 kernel is 5 × 256 × 256 float64 (2.6 MB). Four ways of reading it, interleaved in every
repeat so that the load of a shared machine hits them alike:

1. plain zarr read of a chunk written without the zstd frame checksum (the store of wkviz ≤ 0.2.0);
2. plain zarr read of a chunk with the frame checksum (the store now);
3. the verified read of the store (2 + the BLAKE2b-128 digest of the tile compared with the manifest);
4. the digest alone.

The order of the four is shuffled in every repeat. Reports mean ± standard error, median, n, and the paired difference 3 − 2. Run::

    .venv/bin/python benchmarks/bench_store_check.py --repeats 200
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import zarr
from ase.build import molecule
from zarr.codecs import ZstdCodec

from wkviz import Hypers
from wkviz.scale.store import KernelStore
from wkviz.scale.tilecheck import tile_digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--tile", type=int, default=256)
    args = ap.parse_args()
    t = args.tile
    rng = np.random.default_rng(0)
    x = rng.random((5, t, 64))
    block = x @ x.transpose(0, 2, 1) / 64  # smooth positive values, compressible like a kernel
    root = tempfile.mkdtemp(prefix="wkviz-bench-")
    store = KernelStore.open(os.path.join(root, "s"), [molecule("H2O")] * t, hypers=Hypers(nu_max=4), tile_size=t)
    store.write_tile(0, 0, {"K": block})
    old = zarr.open_group(os.path.join(root, "old"), mode="w").create_array(
        "K", shape=block.shape, chunks=block.shape, dtype="float64", fill_value=np.nan,
        compressors=ZstdCodec(level=0, checksum=False))
    old[...] = block
    new = zarr.open_group(os.path.join(root, "s", "kernels.zarr"), mode="r")["K"]
    fns = {
        "plain read, zstd without frame checksum": lambda: np.asarray(old[...]),
        "plain read, zstd with frame checksum": lambda: np.asarray(new[:, 0:t, 0:t]),
        "verified read (frame checksum + digest)": lambda: store._read_tile("K", 0, 0),
        "digest alone": lambda: tile_digest("K", 0, 0, block),
    }
    assert store._read_tile("K", 0, 0)[1] is None
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    order = list(fns)
    for _ in range(args.repeats):
        rng.shuffle(order)  # no position in the round is favoured (caches, the scheduler of a shared machine)
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
    print(f"tile 5 × {t} × {t} float64 ({block.nbytes / 2**20:.2f} MiB), load {os.getloadavg()[0]:.1f}")
    for k, v in times.items():
        v = np.asarray(v)
        print(f"  {k:42s} {v.mean():6.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f} ms, median {np.median(v):6.2f} "
              f"(n={len(v)})")
    d = np.asarray(times["verified read (frame checksum + digest)"]) - np.asarray(
        times["plain read, zstd with frame checksum"])
    se = d.std(ddof=1) / np.sqrt(len(d))
    print(f"  verified − plain (paired)                  {d.mean():6.2f} ± {se:.2f} ms, median {np.median(d):6.2f}")


if __name__ == "__main__":
    main()
