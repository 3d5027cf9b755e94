"""Self-contained 3D views (py3Dmol / 3Dmol.js) of structures, atomic environments and vector arrows.

Every function returns one HTML document that works with no network: py3Dmol records the viewer commands,
and the local copy of 3Dmol.js made at set-up (``scripts/fetch_3dmol.py`` → ``wkviz/static/3Dmol-min.js``) is
inlined in front of them, so py3Dmol's CDN loader is never triggered. When that copy is missing the functions
raise :class:`ViewerUnavailable` with a message saying how to make it; pages show the message instead of an
empty frame.

The HTML is deterministic (its element ids are a hash of the content), so a front end that re-renders on every
interaction (Streamlit) does not reload an unchanged viewer. The outer ``<div class="wkviz-viewer">`` carries
``data-structure-id`` / ``data-formula`` attributes and the page sets ``window.wkvizViewerReady = true`` once
3Dmol has drawn, which the browser tests check.
"""

from __future__ import annotations

import functools
import hashlib
import html as _html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "Arrow",
    "ViewerUnavailable",
    "STATIC_DIR",
    "local_3dmol_path",
    "viewer_available",
    "missing_message",
    "structure_html",
    "environment_html",
    "dipole_arrows",
]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
_JS_NAME = "3Dmol-min.js"

#: CPK-like colours for highlighted atoms and arrows; 3Dmol's own element colours are used for the rest.
CENTER_COLOR = "#f08a24"
NEIGHBOR_COLOR = "#4a90d9"


class ViewerUnavailable(RuntimeError):
    """The local 3Dmol.js copy is missing; the message says how to create it."""


def local_3dmol_path() -> Path:
    """Where the local 3Dmol.js copy lives (it may not exist)."""
    return STATIC_DIR / _JS_NAME


def viewer_available() -> bool:
    """True when the local 3Dmol.js copy exists and is not empty."""
    path = local_3dmol_path()
    return path.is_file() and path.stat().st_size > 10_000


def missing_message() -> str:
    """One sentence for the page when 3D views cannot be drawn."""
    return (
        "3D view unavailable: the local copy of 3Dmol.js is missing (wkviz never loads it from the internet). "
        "Run `python scripts/fetch_3dmol.py` once (needs npm or internet access at set-up), then reload the page."
    )


@functools.lru_cache(maxsize=1)
def _library_js(mtime: float) -> str:
    text = local_3dmol_path().read_text(encoding="utf-8")
    # An HTML parser ends a <script> element at the first "</script", even inside a JS string literal.
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def _library() -> str:
    if not viewer_available():
        raise ViewerUnavailable(missing_message())
    return _library_js(local_3dmol_path().stat().st_mtime)


@dataclass(frozen=True)
class Arrow:
    """An arrow from ``start`` along ``vector`` (Å), e.g. a dipole scaled to a visible length."""

    start: tuple[float, float, float]
    vector: tuple[float, float, float]
    color: str = "#c92a2a"
    label: str | None = None
    radius: float = 0.09


def dipole_arrows(atoms, vectors: dict[str, tuple[Sequence[float], str]], *, length: float | None = 2.5,
                  labelled: bool = True) -> list[Arrow]:
    """Arrows for one or more dipole vectors drawn from the centre of mass.

    Parameters
    ----------
    atoms : ase.Atoms
    vectors : dict
        ``label → (vector, colour)``, e.g. ``{"true": (mu, "#333"), "predicted": (mu_hat, "#c92a2a")}``.
    length : float, optional
        Length (Å) of the longest arrow; the others are scaled by the same factor so relative sizes stay
        true. ``None`` draws vectors at their own length (in Å per unit of the vector).
    labelled : bool
        Write each arrow's name in the 3D view (off: say which colour is which beside it).

    Returns
    -------
    list of Arrow
    """
    centre = atoms.get_center_of_mass()
    norms = [float(np.linalg.norm(v)) for v, _ in vectors.values()]
    top = max(norms or [0.0])
    scale = 1.0 if length is None or top == 0 else length / top
    return [
        Arrow(tuple(map(float, centre)), tuple(float(x) * scale for x in np.asarray(v, dtype=float)), color,
              label if labelled else None)
        for label, (v, color) in vectors.items()
    ]


def _xyz_block(symbols, positions) -> str:
    lines = [str(len(symbols)), "wkviz"]
    lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, positions)]
    return "\n".join(lines) + "\n"


def _vec(p) -> dict:
    return {"x": float(p[0]), "y": float(p[1]), "z": float(p[2])}


_BALL_STICK = {"stick": {"radius": 0.14, "colorscheme": "Jmol"}, "sphere": {"scale": 0.28, "colorscheme": "Jmol"}}


def _build(symbols, positions, *, height: int, title: str, attrs: dict, highlight=(), center=None,
           cutoff=None, arrows: Sequence[Arrow] = (), cell=None, labels: bool = False, dim=()) -> str:
    import py3Dmol

    library = _library()
    # The CDN URL is never requested: $3Dmolpromise is already resolved when py3Dmol's loader runs.
    view = py3Dmol.view(width="100%", height=f"{height}px", js="about:blank")
    view.addModel(_xyz_block(symbols, positions), "xyz")
    view.setStyle({}, _BALL_STICK)
    if dim:
        view.setStyle({"index": [int(i) for i in dim]},
                      {"sphere": {"scale": 0.18, "opacity": 0.35, "colorscheme": "Jmol"}})
    if highlight:
        view.setStyle({"index": [int(i) for i in highlight]},
                      {"stick": {"radius": 0.14, "colorscheme": "Jmol"},
                       "sphere": {"scale": 0.34, "color": NEIGHBOR_COLOR}})
    if center is not None:
        view.setStyle({"index": int(center)},
                      {"stick": {"radius": 0.14, "colorscheme": "Jmol"}, "sphere": {"scale": 0.45, "color": CENTER_COLOR}})
        if cutoff:
            view.addSphere({"center": _vec(positions[center]), "radius": float(cutoff), "color": CENTER_COLOR,
                            "opacity": 0.12})
            view.addSphere({"center": _vec(positions[center]), "radius": float(cutoff), "color": CENTER_COLOR,
                            "wireframe": True, "opacity": 0.25})
    if cell is not None:
        a, b, c = np.asarray(cell, dtype=float)
        corners = {(i, j, k): i * a + j * b + k * c for i in (0, 1) for j in (0, 1) for k in (0, 1)}
        for (i, j, k), p in corners.items():
            for d in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
                q = (i + d[0], j + d[1], k + d[2])
                if q in corners:
                    view.addCylinder({"start": _vec(p), "end": _vec(corners[q]), "radius": 0.03, "color": "#666",
                                      "fromCap": 1, "toCap": 1})
    for k, arrow in enumerate(arrows):
        start = np.asarray(arrow.start, dtype=float)
        end = start + np.asarray(arrow.vector, dtype=float)
        length = float(np.linalg.norm(end - start))
        if length < 1e-9:
            continue
        view.addArrow({"start": _vec(start), "end": _vec(end), "radius": arrow.radius, "color": arrow.color,
                       "mid": 0.8})
        if arrow.label:
            # past the tip and drawn in front: at the tip the label sat on the atoms; two nearly equal arrows
            # (true and predicted) get their labels on opposite sides of the tip
            beyond = end + 0.8 * (end - start) / length
            view.addLabel(arrow.label, {"position": _vec(beyond), "backgroundColor": arrow.color,
                                        "backgroundOpacity": 0.9, "fontColor": "white", "fontSize": 12,
                                        "inFront": True, "alignment": "bottomLeft" if k % 2 else "topRight"})
    if labels:
        for i, (s, p) in enumerate(zip(symbols, positions)):
            view.addLabel(f"{s}{i}", {"position": _vec(p), "fontSize": 11, "backgroundOpacity": 0.5})
    view.zoomTo()
    if center is None and not arrows:
        view.zoom(1.15)
    body = view.startjs + view.endjs
    uid = hashlib.sha1(body.encode()).hexdigest()[:12]
    body = body.replace("UNIQUEID", uid)
    data_attrs = " ".join(f'data-{k}="{_html.escape(str(v), quote=True)}"' for k, v in attrs.items())
    caption = f'<div class="wkviz-caption">{_html.escape(title)}</div>' if title else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body {{ margin: 0; padding: 0; font-family: Inter, Helvetica, Arial, sans-serif; background: white; }}
  .wkviz-caption {{ font-size: 15px; color: #222; padding: 2px 4px 4px 4px; }}
  .wkviz-viewer {{ border: 1px solid #ddd; border-radius: 6px; overflow: hidden; }}
</style></head>
<body>
<div class="wkviz-viewer" id="wkviz-{uid}" {data_attrs}>
{caption}
<script>{library}</script>
<script>var $3Dmolpromise = Promise.resolve(); window.wkvizViewerReady = false;</script>
{body}
<script>$3Dmolpromise.then(function() {{ window.wkvizViewerReady = true; }});</script>
</div>
</body></html>"""


def structure_html(
    atoms,
    *,
    height: int = 420,
    title: str | None = None,
    structure_id: int | str | None = None,
    highlight: Sequence[int] = (),
    center: int | None = None,
    cutoff: float | None = None,
    arrows: Sequence[Arrow] = (),
    show_cell: bool = True,
    labels: bool = False,
) -> str:
    """HTML of one structure (ball and stick), optionally with a highlighted centre, a cutoff sphere, arrows.

    Parameters
    ----------
    atoms : ase.Atoms
    height : int
        Viewer height in pixels (the caption adds about 24 px).
    title : str, optional
        Caption above the viewer; default ``"structure <id> · <formula>"``.
    structure_id : int or str, optional
        Stored as ``data-structure-id`` and used in the default caption.
    highlight : sequence of int
        Atom indices drawn in the neighbour colour.
    center : int, optional
        Atom index drawn large in the centre colour.
    cutoff : float, optional
        Radius (Å) of a translucent sphere around ``center``.
    arrows : sequence of Arrow
    show_cell : bool
        Draw the unit cell of a periodic structure.
    labels : bool
        Label every atom with its symbol and index.

    Returns
    -------
    str
        A complete HTML document.

    Raises
    ------
    ViewerUnavailable
        When the local 3Dmol.js copy is missing.
    """
    formula = atoms.get_chemical_formula()
    if title is None:
        title = f"structure {structure_id} · {formula}" if structure_id is not None else formula
    attrs = {"structure-id": "" if structure_id is None else structure_id, "formula": formula, "atoms": len(atoms)}
    cell = atoms.cell.array if show_cell and atoms.pbc.any() and atoms.cell.volume > 0 else None
    return _build(atoms.get_chemical_symbols(), atoms.positions, height=height, title=title, attrs=attrs,
                  highlight=highlight, center=center, cutoff=cutoff, arrows=arrows, cell=cell, labels=labels)


def environment_html(
    atoms,
    center: int,
    cutoff: float,
    *,
    height: int = 420,
    title: str | None = None,
    structure_id: int | str | None = None,
    context: float = 1.5,
) -> str:
    """HTML of the atomic environment of ``atoms[center]``: the centre, its neighbours within ``cutoff``
    (periodic images included) highlighted, the cutoff sphere, and the rest of the structure within
    ``context × cutoff`` drawn faintly.

    Parameters
    ----------
    atoms : ase.Atoms
    center : int
        Index of the central atom.
    cutoff : float
        Cutoff radius, Å.
    height : int
    title : str, optional
    structure_id : int or str, optional
    context : float
        Atoms up to this multiple of the cutoff are drawn (faintly beyond the cutoff) for orientation.

    Returns
    -------
    str
    """
    from ..geometry import neighbor_pairs

    center = int(center)
    if not 0 <= center < len(atoms):
        raise IndexError(f"atom {center} does not exist in a structure of {len(atoms)} atoms")
    reach = float(cutoff) * float(context)
    if atoms.pbc.any():
        i, j, D = neighbor_pairs(atoms, reach)
        sel = i == center
        rel = D[sel]
        js = j[sel]
        positions = np.vstack([atoms.positions[center], atoms.positions[center] + rel])
        numbers = np.concatenate([[atoms.numbers[center]], atoms.numbers[js]])
    else:
        rel = atoms.positions - atoms.positions[center]
        keep = np.linalg.norm(rel, axis=1) <= reach
        keep[center] = False
        order = np.concatenate([[center], np.flatnonzero(keep)])
        positions = atoms.positions[order]
        numbers = atoms.numbers[order]
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[z] for z in numbers]
    dist = np.linalg.norm(positions - positions[0], axis=1)
    inside = [k for k in range(1, len(symbols)) if dist[k] <= cutoff]
    outside = [k for k in range(1, len(symbols)) if dist[k] > cutoff]
    formula = atoms.get_chemical_formula()
    element = atoms.get_chemical_symbols()[center]
    if title is None:
        prefix = f"structure {structure_id} · " if structure_id is not None else ""
        title = f"{prefix}{formula} · {element} atom {center}: {len(inside)} neighbours within {cutoff:g} Å"
    attrs = {"structure-id": "" if structure_id is None else structure_id, "formula": formula, "center": center,
             "neighbors": len(inside)}
    return _build(symbols, positions, height=height, title=title, attrs=attrs, highlight=inside, center=0,
                  cutoff=cutoff, dim=outside)


def viewer_payload_size(html: str) -> int:
    """Bytes sent to the browser for one viewer (the inlined library dominates)."""
    return len(html.encode("utf-8"))


def describe(html: str) -> dict:
    """The ``data-*`` attributes of a viewer document (for tests and logs)."""
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', html.split("<script>", 1)[0]))

