"""Make the local copy of 3Dmol.js that wkviz's 3D viewer inlines (never a CDN at view time).

py3Dmol loads 3Dmol.js from a CDN by default, which fails offline and leaks every page view to a third party.
This script runs once at set-up: it fetches the npm package ``3dmol`` (the version matching the installed
py3Dmol, unless ``--version`` says otherwise) and copies ``build/3Dmol-min.js`` and its licence into
``wkviz/static/``. It uses ``npm pack`` when npm is installed, else the npm registry's tarball over HTTPS with
the registry's sha512 integrity check. Nothing happens when the copy is already there.

Usage::

    python scripts/fetch_3dmol.py [--version 2.5.5] [--force]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "wkviz" / "static"
TARGET = STATIC / "3Dmol-min.js"
LICENSE = STATIC / "3Dmol-min.js.LICENSE.txt"
VERSION_FILE = STATIC / "3Dmol-min.js.version"
REGISTRY = "https://registry.npmjs.org/3dmol"
FALLBACK_VERSION = "2.5.5"


def default_version() -> str:
    try:
        return metadata.version("py3Dmol")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def tarball_with_npm(version: str, workdir: Path) -> bytes | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    proc = subprocess.run([npm, "pack", f"3dmol@{version}", "--silent"], cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"npm pack failed ({proc.stderr.strip()[:200]}); trying the registry directly", file=sys.stderr)
        return None
    name = proc.stdout.strip().splitlines()[-1]
    return (workdir / name).read_bytes()


def tarball_from_registry(version: str) -> bytes:
    with urllib.request.urlopen(f"{REGISTRY}/{version}", timeout=60) as resp:
        meta = json.load(resp)
    dist = meta["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=120) as resp:
        data = resp.read()
    integrity = dist.get("integrity", "")
    if integrity.startswith("sha512-"):
        expected = base64.b64decode(integrity[len("sha512-"):])
        if hashlib.sha512(data).digest() != expected:
            raise SystemExit("error: the downloaded 3dmol tarball does not match the registry's sha512 integrity")
    return data


def extract(tarball: bytes) -> tuple[bytes, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        js = tar.extractfile("package/build/3Dmol-min.js").read()
        try:
            lic = tar.extractfile("package/LICENSE").read()
        except KeyError:
            lic = None
    return js, lic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=default_version(), help="3dmol npm version (default: py3Dmol's)")
    parser.add_argument("--force", action="store_true", help="fetch again even if the copy exists")
    args = parser.parse_args(argv)

    if TARGET.exists() and not args.force and VERSION_FILE.exists() and VERSION_FILE.read_text().strip() == args.version:
        print(f"3Dmol.js {args.version} already in {TARGET.relative_to(Path.cwd()) if TARGET.is_relative_to(Path.cwd()) else TARGET}")
        return 0
    STATIC.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            tarball = tarball_with_npm(args.version, Path(tmp)) or tarball_from_registry(args.version)
        except OSError as exc:
            print(f"error: could not fetch 3dmol {args.version} ({exc}); the 3D viewer will show a notice instead "
                  "of structures until this script succeeds", file=sys.stderr)
            return 1
    js, lic = extract(tarball)
    if b"$3Dmol" not in js[:200000] and b"3Dmol" not in js[:2000]:
        print("error: the fetched file does not look like 3Dmol.js", file=sys.stderr)
        return 1
    TARGET.write_bytes(js)
    if lic:
        LICENSE.write_bytes(lic)
    VERSION_FILE.write_text(args.version + "\n")
    print(f"wrote {TARGET} ({len(js) / 1e3:.0f} kB, 3dmol {args.version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
