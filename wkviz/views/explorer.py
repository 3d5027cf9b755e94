"""chemiscope datasets of a data set and its results: structures or atomic environments, kernel-PCA coordinates
per body order, the target, each model's prediction, error and uncertainty, composition and size, vector targets
as arrows.

Pure functions from arrays to the plain ``dict`` that chemiscope reads (the same document
:func:`wkviz.views.export.chemiscope_json` writes to a file and the app passes to chemiscope's Streamlit
component). Nothing here imports streamlit or chemiscope: the format is written directly (lists and strings
only, so ``json.dumps`` takes it as is), which is also what makes a 20,000-environment map quick to build.

:func:`component_dir` prepares the directory the app serves chemiscope's Streamlit component from: chemiscope's
own JavaScript bundle (copied from the installed package) beside a page of ours that loads nothing from the
internet (the page shipped with chemiscope 1.1.0 asks three CDNs for jQuery, pako and Bootstrap, which the bundle
does not need; offline they fail or stall the viewer).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "structures",
    "prop",
    "arrows",
    "kpca_properties",
    "composition_properties",
    "target_properties",
    "model_properties",
    "default_color",
    "take",
    "settings",
    "dataset",
    "to_json",
    "component_dir",
    "component_available",
]


def structures(frames) -> list[dict]:
    """chemiscope ``structures``: symbols and positions (Å) of each structure, the cell when periodic."""
    out = []
    for atoms in frames:
        pos = np.asarray(atoms.positions, dtype=float)
        s = {"size": len(atoms), "names": atoms.get_chemical_symbols(),
             "x": pos[:, 0].round(5).tolist(), "y": pos[:, 1].round(5).tolist(), "z": pos[:, 2].round(5).tolist()}
        if atoms.pbc.any():
            s["cell"] = atoms.cell.array.ravel().tolist()
        out.append(s)
    return out


def _significant(v: np.ndarray, digits: int) -> np.ndarray:
    """``v`` rounded to ``digits`` significant figures (short JSON, no information a map can show lost)."""
    out = v.copy()
    finite = np.isfinite(v) & (v != 0)
    decimals = np.zeros(len(v), dtype=int)
    decimals[finite] = digits - 1 - np.floor(np.log10(np.abs(v[finite]))).astype(int)
    for d in np.unique(decimals[finite]):
        m = finite & (decimals == d)
        out[m] = np.round(v[m], d)
    return out


def _values(values) -> list:
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.number):
        v = _significant(values.astype(float).ravel(), 8)
        # JSON has no NaN: a missing value (a prediction for a training structure) is written as null; chemiscope
        # refuses null, so a map with model columns shows the test rows only (:func:`take`)
        return [None if not np.isfinite(x) else float(x) for x in v]
    return [str(x) for x in values]


def prop(values, target: str = "structure", *, units: str | None = None, description: str | None = None) -> dict:
    """One chemiscope property: ``values`` (numbers, NaN → missing, or strings → categories) per structure or
    per atom (``target="atom"``)."""
    entry = {"target": target, "values": _values(values)}
    if units:
        entry["units"] = units
    if description:
        entry["description"] = description
    return entry


def arrows(vectors, color: str, *, scale: float | None = None, radius: float = 0.1) -> dict:
    """A chemiscope arrow shape, one arrow per structure, drawn from the structure's centre.

    Parameters
    ----------
    vectors : ndarray of shape (n_structures, 3)
        One vector per structure (e.g. a dipole, in its own unit).
    color : str
        "#rrggbb".
    scale : float, optional
        Å per unit of the vector; default: the largest vector is 2.5 Å long.
    radius : float
        Shaft radius, Å.

    Returns
    -------
    dict
        ``{"kind": "arrow", "parameters": {...}}`` for ``dataset(shapes={name: ...})``.
    """
    v = np.asarray(vectors, dtype=float).reshape(-1, 3)
    if scale is None:
        largest = float(np.linalg.norm(v, axis=1).max()) if len(v) else 0.0
        scale = 2.5 / largest if largest > 0 else 1.0
    v = np.where(np.isfinite(v), v, 0.0) * scale
    return {"kind": "arrow",
            "parameters": {"global": {"baseRadius": radius, "headRadius": 2.5 * radius, "headLength": 0.4,
                                      "color": color},
                           "structure": [{"vector": row.round(4).tolist()} for row in v]}}


def kpca_properties(projections: Mapping[str, object], target: str = "structure", *,
                    n_components: int = 2) -> dict:
    """Kernel-PCA coordinates as properties ``"<kernel> PC<k>"`` (e.g. ``"ν=2 PC1"``, ``"mixed PC2"``).

    Parameters
    ----------
    projections : mapping label → :class:`wkviz.evaluation.projection.Projection`
        As :func:`wkviz.evaluation.projection.project_all` returns (labels ``"nu=2"``, ``"mixed"``).
    """
    out = {}
    for label, p in projections.items():
        name = label.replace("nu=", "ν=")
        coords = np.asarray(p.coords)
        for k in range(min(n_components, coords.shape[1])):
            share = p.explained_variance_ratio[k]
            out[f"{name} PC{k + 1}"] = prop(
                coords[:, k], target,
                description=f"kernel principal component {k + 1} of the {name} kernel "
                            f"(cosine-normalised, centred; {100 * share:.0f}% of its variance)")
    return out


def composition_properties(frames, environments: Sequence[tuple[int, int]] | None = None) -> dict:
    """Size and composition: number of atoms, atoms of each element, the set of elements (per structure), or
    for environments the centre's element and its structure."""
    if environments is not None:
        env = np.asarray(environments, dtype=int).reshape(-1, 2)
        symbols = [frames[s].get_chemical_symbols()[a] for s, a in env]
        return {"element": prop(symbols, "atom", description="element of the central atom"),
                "structure": prop(env[:, 0], "atom", description="index of the structure in the data set"),
                "number of atoms": prop([len(frames[s]) for s in env[:, 0]], "atom",
                                        description="atoms in the environment's structure")}
    counts = [a.symbols.formula.count() for a in frames]
    elements = sorted({el for c in counts for el in c})
    out = {"structure": prop(np.arange(len(frames)), description="index of the structure in the data set"),
           "number of atoms": prop([len(a) for a in frames], description="atoms in the structure")}
    for el in elements:
        out[f"{el} atoms"] = prop([c.get(el, 0) for c in counts], description=f"number of {el} atoms")
    out["elements"] = prop([",".join(sorted(c)) for c in counts], description="elements present")
    return out


def target_properties(key: str, values, *, unit: str = "", n_atoms=None, extensive: bool = False,
                      target: str = "structure") -> dict:
    """The target as properties: a scalar as is and, when extensive, per atom (what a chemist compares across
    molecules of different sizes; total energies mostly count atoms); a vector or tensor as its norm.

    Parameters
    ----------
    values : ndarray of shape (n,), (n, 3) or (n, 3, 3)
    n_atoms : array of int, optional
        Atoms per structure (needed for the per-atom value of an extensive target).
    """
    y = np.asarray(values, dtype=float)
    out = {}
    if y.ndim == 1:
        out[key] = prop(y, target, units=unit, description=f"target {key}")
        if extensive and n_atoms is not None:
            out[f"{key} per atom"] = prop(y / np.asarray(n_atoms, dtype=float), target, units=unit,
                                          description=f"{key} divided by the number of atoms")
    else:
        flat = y.reshape(len(y), -1)
        out[f"|{key}|"] = prop(np.linalg.norm(flat, axis=1), target, units=unit, description=f"norm of {key}")
    return out


def model_properties(n: int, test, y_true, models: Mapping[str, Mapping], *, unit: str = "",
                     target: str = "structure") -> dict:
    """Each model's prediction, absolute error and GP uncertainty on the test structures (missing elsewhere).

    Parameters
    ----------
    n : int
        Number of structures (or environments) on the map.
    test : array of int
        Rows of the map the predictions are for.
    y_true : ndarray of shape (len(test), ...) 
    models : mapping label → ``{"pred": array like y_true, "std": array like y_true or None}``
        E.g. ``{"mixed": ..., "ν=2": ...}``.

    Returns
    -------
    dict
        ``"prediction (<label>)"``, ``"|error| (<label>)"`` and ``"σ (<label>)"`` per model; a vector's
        prediction as its norm, its error as the norm of the difference.
    """
    test = np.asarray(test, dtype=int)
    yt = np.asarray(y_true, dtype=float).reshape(len(test), -1)
    out = {}
    for label, m in models.items():
        yp = np.asarray(m["pred"], dtype=float).reshape(len(test), -1)
        full = np.full(n, np.nan)
        full[test] = yp[:, 0] if yp.shape[1] == 1 else np.linalg.norm(yp, axis=1)
        out[f"prediction ({label})"] = prop(full, target, units=unit,
                                            description=f"{label} model's prediction (test structures only)")
        err = np.full(n, np.nan)
        err[test] = np.linalg.norm(yp - yt, axis=1)
        out[f"|error| ({label})"] = prop(err, target, units=unit,
                                         description=f"absolute error of the {label} model (test structures only)")
        if m.get("std") is not None:
            sd = np.asarray(m["std"], dtype=float).reshape(len(test), -1)
            full = np.full(n, np.nan)
            full[test] = sd.max(axis=1)
            out[f"σ ({label})"] = prop(full, target, units=unit,
                                       description=f"GP predictive standard deviation of the {label} model")
    return out


def take(properties: Mapping[str, Mapping], rows) -> dict:
    """The properties of some rows only (e.g. the test structures, where every model has a prediction)."""
    rows = np.asarray(rows, dtype=int)
    return {name: dict(p, values=[p["values"][i] for i in rows]) for name, p in properties.items()}


def default_color(properties: Mapping[str, object], target_key: str | None) -> str | None:
    """The colour a map opens with: the mixed model's error when a model was fitted, else the target per atom
    (an extensive total mostly counts atoms), else the target, else the number of atoms."""
    names = ["|error| (mixed)"] + ([f"{target_key} per atom", target_key, f"|{target_key}|"] if target_key else [])
    for name in names + ["number of atoms"]:
        if name in properties:
            return name
    return None


def settings(*, x: str | None = None, y: str | None = None, color: str | None = None, size: str | None = None, z: str | None = None,
             target: str = "structure", shapes: Sequence[str] = (), cutoff: float | None = None,
             atom_color: str | None = None) -> dict:
    """chemiscope viewer settings: map axes, colour and size properties, environments (centre highlighted, the
    cutoff sphere shown), the shapes drawn in the structure viewer and the per-atom property that colours its
    atoms (``atom_color``)."""
    m = {axis: {"property": name} for axis, name in (("x", x), ("y", y), ("z", z)) if name}
    if color:
        m["color"] = {"property": color}
    if size:
        m["size"] = {"property": size, "factor": 50, "mode": "linear"}
    structure = {}
    if target == "atom":
        structure["environments"] = {"activated": True, "center": True, "bgStyle": "ball-stick", "bgColor": "grey",
                                     "cutoff": float(cutoff or 4.0)}
    if shapes:
        structure["shape"] = ",".join(shapes)
    if atom_color:
        structure["color"] = {"property": atom_color}
    out = {"map": m, "target": target}
    if structure:
        out["structure"] = [structure]
    return out


def dataset(frames, properties: Mapping[str, Mapping], *, name: str = "wkviz map", description: str = "",
            environments: Sequence[tuple[int, int]] | None = None, cutoff: float | None = None,
            shapes: Mapping[str, Mapping] | None = None, settings: Mapping | None = None) -> dict:
    """A chemiscope dataset (``meta``, ``structures``, ``properties``, optional ``environments``, ``shapes``,
    ``settings``) as plain lists, dicts and strings.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    properties : mapping name → property
        From :func:`prop` (or ``{"target", "values", "units", "description"}`` with array values).
    environments : sequence of (structure, atom), optional
        The environments that ``"atom"`` properties refer to, in order.
    cutoff : float, optional
        Radius of the environments, Å.
    shapes : mapping name → shape, optional
        From :func:`arrows`.
    settings : mapping, optional
        From :func:`settings`.

    Returns
    -------
    dict
    """
    props = {}
    for key, p in properties.items():
        if isinstance(p.get("values"), list):
            props[key] = dict(p)
        else:
            props[key] = prop(p["values"], p.get("target", "structure"), units=p.get("units"),
                              description=p.get("description"))
    data = {"meta": {"name": name, "description": description}, "structures": structures(frames),
            "properties": props}
    if environments is not None:
        data["environments"] = [{"structure": int(s), "center": int(a), "cutoff": float(cutoff or 0.0)}
                                for s, a in environments]
    if shapes:
        data["shapes"] = {k: dict(v) for k, v in shapes.items()}
    if settings:
        data["settings"] = dict(settings)
    return data


def to_json(data: Mapping) -> bytes:
    """UTF-8 JSON of a dataset (the file chemiscope.org and ``chemiscope.show`` open)."""
    import json

    return json.dumps(data, allow_nan=False).encode("utf-8")


# --------------------------------------------------------------------------------------------------------------
# The component's files, served by the app without any request to the internet
# --------------------------------------------------------------------------------------------------------------
_BUNDLE = "chemiscope-streamlit.min.js"

# Our page for chemiscope's component bundle: the element ids the bundle looks up, and nothing from a CDN (the
# bundle carries its own Bootstrap styles and pako; it does not use jQuery).
_INDEX_HTML = """<!doctype html>
<html>
  <head>
    <meta charset="utf-8" />
    <title>chemiscope (wkviz, offline)</title>
    <style>html, body { margin: 0; padding: 0; overflow: hidden; }</style>
    <script src="chemiscope-streamlit.min.js"></script>
  </head>
  <body>
    <div id="chemiscope-root-warning-display" class="chemiscope-streamlit-warning" style="display: none">
      <p></p>
      <button type="button" aria-label="Close" onclick="this.parentNode.style.display='none'">&times;</button>
    </div>
    <div id="chemiscope-root-loading" class="chemiscope-streamlit-loading" style="display: none">
      <p>Loading chemiscope…</p>
    </div>
    <div id="chemiscope-root"></div>
  </body>
</html>
"""


def _installed_bundle() -> Path | None:
    spec = importlib.util.find_spec("chemiscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "streamlit" / _BUNDLE
    return path if path.exists() else None


def component_available() -> tuple[bool, str]:
    """Whether chemiscope's Streamlit component can be shown here, and why not."""
    if _installed_bundle() is None:
        return False, ("The interactive map needs chemiscope 1.1 (pip install chemiscope==1.1.0, part of "
                       "requirements.txt).")
    return True, ""


def component_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory to serve chemiscope's Streamlit component from: our offline ``index.html`` and the bundle
    of the installed chemiscope, copied once (and again when chemiscope changes).

    Parameters
    ----------
    root : path, optional
        Where to make it; default ``wkviz/static/chemiscope`` (gitignored), or ``~/.cache/wkviz/chemiscope``
        when the package directory is read-only.

    Raises
    ------
    FileNotFoundError
        When chemiscope is not installed (message says what to install).
    """
    bundle = _installed_bundle()
    if bundle is None:
        raise FileNotFoundError(component_available()[1])
    candidates = [Path(root)] if root is not None else [
        Path(__file__).resolve().parent.parent / "static" / "chemiscope",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wkviz" / "chemiscope"]
    last_error = None
    for target in candidates:
        try:
            target.mkdir(parents=True, exist_ok=True)
            dest = target / _BUNDLE
            st_src = bundle.stat()
            if not dest.exists() or dest.stat().st_size != st_src.st_size or dest.stat().st_mtime < st_src.st_mtime:
                tmp = target / (_BUNDLE + ".tmp")
                shutil.copyfile(bundle, tmp)
                os.replace(tmp, dest)
            index = target / "index.html"
            if not index.exists() or index.read_text(encoding="utf-8") != _INDEX_HTML:
                index.write_text(_INDEX_HTML, encoding="utf-8")
            return target
        except OSError as exc:  # read-only install: try the next place
            last_error = exc
    raise FileNotFoundError(f"cannot prepare chemiscope's component files: {last_error}")
