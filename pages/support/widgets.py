"""Drawing helpers shared by the pages: error messages, downloads and reproduce boxes, charts, the 3D viewer,
headers and legends, the sidebar's session summary, and number formatting.

Figures themselves are built by :mod:`wkviz.views.figures`; these only place them in a page.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from wkviz import cache
from wkviz.views import export, figures
from wkviz.views import viewer
from wkviz.errors import WkvizError
from wkviz.presets import PRESETS, preset_changes

from .datasets import Dataset
from .state import applied_hypers, applied_preset, current_kernel, dataset, split, target_info

# kaleido (PNG export) needs a Chrome; use the system Chromium when there is one, never download one.
if "BROWSER_PATH" not in os.environ and os.path.exists("/usr/bin/chromium"):
    os.environ["BROWSER_PATH"] = "/usr/bin/chromium"


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def user_errors(what: str | None = None):
    """Show bad-input errors as a message in the page (no traceback); the rest of the page still renders.

    ``ValueError`` is included because invalid hyperparameters raise it from :class:`wkviz.Hypers`.
    """
    try:
        yield
    except (WkvizError, ValueError) as exc:
        st.error(f"{what}: {exc}" if what else str(exc), icon=":material/error:")


def show_job_failure(job: cache.BackgroundJob) -> None:
    """A failed background job: the message for bad input; one sentence for a bug, its traceback in the log."""
    if isinstance(job.error, WkvizError):
        st.error(str(job.error), icon=":material/error:")
    else:
        what = f"the job “{job.label}”" if job.label else "a background job"
        logging.getLogger("wkviz.app").error("%s failed unexpectedly:\n%s", what,
                                             job.error_traceback or job.state().message)
        st.error(f"Something went wrong in {what}; the details are in the log.", icon=":material/bug_report:")


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------
def format_seconds(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_bytes(b: float) -> str:
    """Bytes in three significant digits ("225 MB"): a metric's value must fit a quarter of a 1,000 px page."""
    for unit in ("B", "kB", "MB", "GB"):
        if b < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.3g} {unit}"
        b /= 1024
    return f"{b:.3g} GB"


def format_count(n: float) -> str:
    """A count in three significant digits with k/M/G ("281 k", "9.26 M"), for metrics in narrow columns."""
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:,.0f}"


# --------------------------------------------------------------------------------------------------------------
# Downloads and reproducibility
# --------------------------------------------------------------------------------------------------------------
@st.cache_resource
def _png_status():
    return export.png_export_status()


def downloads(fig=None, *, name: str, key: str, table: pd.DataFrame | None = None, extra: dict | None = None) -> None:
    """A row of download buttons: PNG of the figure (rendered on click), its data as CSV, extra files.

    Parameters
    ----------
    fig : plotly Figure, optional
    name : str
        File stem.
    key : str
        Widget key prefix (namespaced by page).
    table : DataFrame, optional
        The figure's data.
    extra : dict, optional
        label → (file name, bytes or callable, mime).
    """
    items = []
    ok, why = _png_status()
    if fig is not None and ok:
        items.append(("PNG", f"{name}.png", lambda f=fig: export.figure_png(f), "image/png"))
    if table is not None:
        items.append(("CSV", f"{name}.csv", export.table_csv(table), "text/csv"))
    for label, (fname, data, mime) in (extra or {}).items():
        items.append((label, fname, data, mime))
    if not items:
        return
    row = _row()
    with row:
        for label, fname, data, mime in items:
            st.download_button(label, data=data, file_name=fname, mime=mime, key=f"{key}.{label.lower()}.dl",
                               icon=":material/download:", on_click="ignore", type="tertiary")
        if fig is not None and not ok:
            st.caption(why)


def _row():
    """A horizontal container where this Streamlit has one, else a plain container."""
    try:
        return st.container(horizontal=True, gap="small", vertical_alignment="center")
    except TypeError:
        return st.container()


def chart(fig, key: str, **kwargs):
    """``st.plotly_chart`` with wkviz's own styling (not Streamlit's theme), so the page and the PNG match."""
    return st.plotly_chart(fig, key=key, theme=None, config={"displaylogo": False, "toImageButtonOptions": {
        "format": "png", "scale": 2}}, **kwargs)


def reproduce(commands: list[str], config: dict, *, key: str, files: dict | None = None, language: str = "bash",
              title: str = "Reproduce this page (command line, config JSON)") -> None:
    """An expander with the exact ``python -m wkviz`` commands (or Python code, ``language="python"``), the
    config JSON and the input files they need."""
    with st.expander(title, icon=":material/terminal:"):
        st.caption("Download the input files, then run:")
        st.code("\n".join(commands), language=language)
        text = export.config_json(**config)
        st.code(text, language="json")
        items = {"config JSON": (f"{key}_config.json", text, "application/json")}
        items.update(files or {})
        with _row():
            for label, (fname, data, mime) in items.items():
                st.download_button(label, data=data, file_name=fname, mime=mime, key=f"{key}.{fname}.dl",
                                   icon=":material/download:", on_click="ignore")


def dataset_file(ds: Dataset | None = None, idx=None, suffix: str = "") -> tuple[str, object, str]:
    """(file name, bytes callable, mime) of the data set (or a subset) as extxyz, for CLI reproduction."""
    ds = ds or dataset()
    frames = ds.frames if idx is None else [ds.frames[i] for i in idx]
    name = f"{ds.file_stem}{suffix}.extxyz"
    return name, (lambda fr=frames: export.structures_extxyz(fr)), "chemical/x-extxyz"


# --------------------------------------------------------------------------------------------------------------
# 3D viewer
# --------------------------------------------------------------------------------------------------------------
def show_html_viewer(make_html, height: int) -> bool:
    """Render a viewer document built by ``make_html()``; a clear message when 3Dmol.js is not available."""
    if not viewer.viewer_available():
        st.warning(viewer.missing_message(), icon=":material/view_in_ar:")
        return False
    try:
        html = make_html()
    except viewer.ViewerUnavailable as exc:
        st.warning(str(exc), icon=":material/view_in_ar:")
        return False
    # The document is built by wkviz.views.viewer from structures only (text parts escaped), never from raw user HTML.
    if hasattr(st, "iframe"):
        st.iframe(html, height=height + 34)
    else:  # Streamlit < 1.5x
        components.html(html, height=height + 34)
    return True


def show_structure(atoms, *, structure_id=None, height: int = 420, **kw) -> bool:
    return show_html_viewer(lambda: viewer.structure_html(atoms, structure_id=structure_id, height=height, **kw),
                            height)


def selected_ids(state) -> list[int]:
    """Row ids from a plotly selection (``customdata[0]`` of each selected point)."""
    if not state:
        return []
    try:
        points = state["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = []
    for p in points:
        cd = p.get("customdata")
        if cd is None:
            continue
        value = cd[0] if isinstance(cd, (list, tuple)) else cd
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            continue
    return out


# --------------------------------------------------------------------------------------------------------------
# Layout helpers
# --------------------------------------------------------------------------------------------------------------
def page_header(title: str, subtitle: str | None = None) -> None:
    st.title(title)
    if subtitle:
        st.markdown(f"<p style='font-size:1.15rem;color:#444;margin-top:-0.6rem'>{subtitle}</p>",
                    unsafe_allow_html=True)


def body_order_legend(nus) -> str:
    """HTML chips in the body-order colours (the same everywhere)."""
    chips = [
        f"<span style='display:inline-block;padding:2px 10px;margin:2px;border-radius:12px;color:white;"
        f"background:{figures.body_order_color(nu)};font-weight:600'>{figures.body_order_label(nu)}</span>"
        for nu in nus
    ]
    return " ".join(chips)


def sidebar() -> None:
    """Current data set, target, split, hyperparameters and what has been computed (in the current container)."""
    ss = st.session_state
    ds = dataset()
    info = target_info()
    st.markdown("#### Current session")
    st.markdown(f"**Data** · {ds.title}  \n{ds.n} structures · `{ds.digest[:8]}`")
    if info is not None:
        unit = f" ({info.unit})" if info.unit else ""
        st.markdown(f"**Target** · `{info.key}`{unit} · {info.kind}"
                    f"{', extensive' if info.extensive and info.kind != 'atomic' else ''}")
    else:
        st.markdown("**Target** · none found in this data set")
    with contextlib.suppress(WkvizError, ValueError):
        tr, te = split()
        method = "farthest-point" if ss.get("data.split") == "fps" else "random"
        st.markdown(f"**Split** · {len(tr)} train / {len(te)} test ({method}, seed {ss.get('data.seed', 0)})")
    h = applied_hypers()
    preset, why = applied_preset()
    edited = ", ".join(name.replace("_", " ") for name in preset_changes(h, preset))
    st.markdown(f"**Preset** · {PRESETS[preset].label} ({why}){f' · edited: {edited}' if edited else ''}")
    scaling = "off" if h.density_scaling is None else f"{h.density_scaling:g} Å"
    radial = "off" if h.radial_scale is None else f"r₀ {h.radial_scale:g} Å, m {h.radial_exponent:g}"
    # in words for a chemist; the symbols of the Kernels form in the tooltip
    words = (f"**Kernels** look at up to {h.nu_max + 1}-body correlations of the neighbours within "
             f"{h.cutoff:g} Å, each atom a {h.density_width:g} Å-wide cloud"
             + ("" if h.density_scaling is None else " that widens with distance")
             + ("" if h.radial_scale is None else f"; far neighbours count less (half at {h.radial_scale:g} Å)")
             + (f"; hydrogens weigh {h.hydrogen_weight:g}" if h.hydrogen_weight != 1 else "") + ".")
    st.markdown(words, help=(
        f"ν_max {h.nu_max} · λ_max {h.lambda_max} · cutoff {h.cutoff:g} Å (width {h.cutoff_width:g} Å) · "
        f"σ {h.density_width:g} Å · scaling {scaling} · radial weight {radial} · "
        f"element coupling {h.species_coupling:g} · hydrogen weight {h.hydrogen_weight:g} "
        f"(centres {h.hydrogen_center_weight:g}) · {h.normalization}"))
    kres, _ = current_kernel()
    job = ss.get("wk.kernel_job")
    if job is not None and not job.done:
        s = job.state()
        st.markdown(f"**Kernels** · computing, {100 * s.fraction:.0f}%")
    elif kres is not None:
        st.markdown(f"**Kernels** · ✓ computed in {format_seconds(kres.seconds)}")
    else:
        st.markdown("**Kernels** · not computed yet")
    fit = ss.get("wk.fit")
    if fit is not None and fit.get("dataset") == ds.digest:
        st.markdown(f"**Model** · test MAE {fit['mae']:.4g} {fit.get('unit', '')}")
