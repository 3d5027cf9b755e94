"""Downloads: figures as PNG, tables as CSV, structures and predictions as extended XYZ, maps as chemiscope
JSON, page configurations as JSON.

Pure functions from results to ``bytes`` or ``str`` (PNG goes through kaleido and the system Chromium);
none computes a kernel or fits a model, none imports streamlit.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "png_export_status",
    "figure_png",
    "table_csv",
    "structures_extxyz",
    "predictions_extxyz",
    "chemiscope_json",
    "config_json",
]


_BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
_PNG_LOCK = threading.Lock()


def _find_browser() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and os.path.exists(env):
        return env
    for path in _BROWSER_CANDIDATES:
        if os.path.exists(path):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_export_status() -> tuple[bool, str]:
    """Whether :func:`figure_png` can work here, and why not.

    kaleido ≥ 1 renders through a Chrome/Chromium it finds via the ``BROWSER_PATH`` environment variable or
    the usual install locations; we point it at the system Chromium and never let it download one.

    Returns
    -------
    (bool, str)
        ``(True, path_of_browser)`` or ``(False, reason)``.
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG export needs the kaleido package (pip install kaleido); CSV downloads still work."
    browser = _find_browser()
    if browser is None:
        return False, ("PNG export needs Chrome or Chromium (e.g. apt-get install chromium); "
                       "CSV downloads and the chart's camera button still work.")
    return True, browser


def figure_png(fig: go.Figure, *, width: int = 1200, height: int = 700, scale: float = 2.0) -> bytes:
    """Render a figure to PNG bytes with kaleido and the system Chromium.

    Raises
    ------
    RuntimeError
        When no browser or kaleido is available (message says what to install).
    """
    ok, info = png_export_status()
    if not ok:
        raise RuntimeError(info)
    os.environ.setdefault("BROWSER_PATH", info)
    # One render at a time: each call starts a headless browser, and concurrent sessions would race on it.
    with _PNG_LOCK:
        return fig.to_image(format="png", width=width, height=height, scale=scale)


def table_csv(table: pd.DataFrame) -> bytes:
    """CSV bytes of a table (UTF-8, no index)."""
    return table.to_csv(index=False).encode("utf-8")


def structures_extxyz(frames) -> bytes:
    """Extended-XYZ bytes of structures, with their ``info`` and ``arrays`` (the exact input of a CLI call)."""
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, list(frames), format="extxyz")
    return buf.getvalue().encode("utf-8")


def predictions_extxyz(frames, key: str, predictions: np.ndarray, *, sigma: np.ndarray | None = None,
                       per_atom: bool = False) -> bytes:
    """Extended-XYZ bytes of structures with predictions stored as ``<key>_predicted`` (and ``_std``).

    Parameters
    ----------
    frames : sequence of ase.Atoms
        The predicted structures (copied, not modified).
    key : str
        Target name.
    predictions : ndarray of shape (n,), (n, 3), (n, 3, 3), or (total_atoms,) when ``per_atom``
    sigma : ndarray like ``predictions``, optional
    per_atom : bool
        Store in ``arrays`` (one value per atom) instead of ``info``.

    Returns
    -------
    bytes
    """
    import ase.io

    predictions = np.asarray(predictions, dtype=float)
    sigma = None if sigma is None else np.asarray(sigma, dtype=float)
    out = []
    start = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        if per_atom:
            n = len(atoms)
            atoms.arrays[f"{key}_predicted"] = predictions[start:start + n]
            if sigma is not None:
                atoms.arrays[f"{key}_std"] = sigma[start:start + n]
            start += n
        else:
            value = predictions[i]
            atoms.info[f"{key}_predicted"] = value.tolist() if np.ndim(value) else float(value)
            if sigma is not None:
                s = sigma[i]
                atoms.info[f"{key}_std"] = s.tolist() if np.ndim(s) else float(s)
        out.append(atoms)
    buf = io.StringIO()
    ase.io.write(buf, out, format="extxyz")
    return buf.getvalue().encode("utf-8")


def chemiscope_json(
    frames,
    properties: Mapping[str, Mapping],
    *,
    name: str = "wkviz map",
    description: str = "",
    environments: Sequence[tuple[int, int]] | None = None,
    cutoff: float | None = None,
    x: str | None = None,
    y: str | None = None,
    color: str | None = None,
) -> bytes:
    """A chemiscope dataset (JSON) of a map: structures, per-structure or per-atom properties, settings.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    properties : mapping name → ``{"target": "structure"|"atom", "values": array, "units": str,
        "description": str}``
    name, description : str
        Metadata shown by chemiscope.
    environments : sequence of (structure, atom), optional
        Environments an ``"atom"`` property refers to, in order; required for per-atom maps.
    cutoff : float, optional
        Cutoff radius of the environments, Å.
    x, y, color : str, optional
        Property names for chemiscope's initial map axes and colour.

    Returns
    -------
    bytes
        UTF-8 JSON that chemiscope.io and ``chemiscope.show`` load.
    """
    from . import explorer

    props = {key: explorer.prop(p["values"], p.get("target", "structure"), units=p.get("units"),
                                description=p.get("description")) for key, p in properties.items()}
    view = (explorer.settings(x=x, y=y, color=color, target="atom" if environments is not None else "structure",
                              cutoff=cutoff) if x or y or color else None)
    data = explorer.dataset(frames, props, name=name, description=description, environments=environments,
                            cutoff=cutoff, settings=view)
    return json.dumps(data).encode("utf-8")


def config_json(**sections) -> str:
    """Pretty, key-sorted JSON of a page's configuration (hypers as dicts, arrays as lists)."""

    def convert(obj):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (np.integer,)):
            return int(obj)
        if isinstance(obj, (np.floating,)):
            return float(obj)
        raise TypeError(f"cannot write {type(obj).__name__} to JSON")

    return json.dumps(sections, indent=2, sort_keys=True, default=convert)
