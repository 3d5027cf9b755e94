"""Shared app layer: page set-up, navigation, session state, cached wkviz calls, the sidebar, downloads, errors,
and the large-data options (tiles into a kernel store, sparse models) with the size limit that switches them on.

The dashboard is a Streamlit multipage app of the ``pages/`` kind: ``app.py`` is the Home page and every
``pages/<n>_<Name>.py`` file one more page (its number gives the order, its name the URL ``/<Name>``).
Streamlit runs whichever file the user asked for — through the sidebar, a deep link on the first request of
a fresh server, ``st.switch_page`` or ``AppTest.switch_page`` — and never runs ``app.py`` before it. So no file
relies on another having run: each one ends with a single :func:`run_page` call that sets the page up
(wide layout, session state, sidebar) and turns bad input (:class:`wkviz.errors.WkvizError`) into a message.

Pages stay thin: they read widgets (keys namespaced ``"<page>.<name>"``), call one of the cached functions here
(which call wkviz), and render figures built by :mod:`wkviz.views.figures`. Nothing in :mod:`wkviz` imports streamlit.

State lives in ``st.session_state`` under ``"wk.*"`` keys (never widgets), so results survive page switches;
expensive results are keyed by content (:mod:`wkviz.cache`) so navigating never recomputes and sessions
share kernels.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v1 as components
from streamlit.errors import StreamlitAPIException

from wkviz import Hypers

from wkviz import cache

from wkviz.views import figures

from wkviz.views import viewer
from wkviz.errors import Cancelled, InputError, WkvizError

# kaleido (PNG export) needs a Chrome; use the system Chromium when there is one, never download one.
if "BROWSER_PATH" not in os.environ and os.path.exists("/usr/bin/chromium"):
    os.environ["BROWSER_PATH"] = "/usr/bin/chromium"

# --------------------------------------------------------------------------------------------------------------
# Pages (paths relative to app.py, the form st.page_link and st.switch_page take)
# --------------------------------------------------------------------------------------------------------------

HOME = "app.py"
DATA = "pages/1_Data.py"
KERNELS = "pages/2_Kernels.py"
MODELS = "pages/3_Models.py"
CURVES = "pages/4_Learning_curves.py"
MAP = "pages/5_Map.py"
TEACH = "pages/6_Teach.py"


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    icon: str


#: The sidebar navigation, by section. Streamlit's own page list is switched off
#: (``client.showSidebarNavigation = false`` in .streamlit/config.toml) because it would label the Home page
#: "app" (the entry point's file name) and has no sections or icons; every other label is exactly the one
#: Streamlit derives from the file name (tests/test_app.py checks this, and the order, against Streamlit).
NAVIGATION = {
    "Start": (NavItem(HOME, "Home", ":material/home:"),),
    "Workflow": (
        NavItem(DATA, "Data", ":material/database:"),
        NavItem(KERNELS, "Kernels", ":material/grid_on:"),
        NavItem(MODELS, "Models", ":material/model_training:"),
        NavItem(CURVES, "Learning curves", ":material/trending_down:"),
        NavItem(MAP, "Map", ":material/scatter_plot:"),
    ),
    "Understand": (NavItem(TEACH, "Teach", ":material/school:"),),
}

# Type size for projectors is set in .streamlit/config.toml (theme.baseFontSize); plotly figures set their own
# (wkviz.views.figures.FONT_SIZE). Keep wide pages from stretching past what a projector shows well.
_PAGE_CSS = "<style>.block-container { padding-top: 2.2rem; max-width: 1600px; }</style>"


def run_page(render: Callable[[], None], title: str) -> None:
    """Set a page up, draw it with ``render()``, and show bad input as a message instead of a traceback.

    Every page file (``app.py`` included) makes this one call, so a page looks and behaves the same however it
    was reached: wide layout, session defaults, the sidebar with navigation and the current data set / target /
    hyperparameters. A :class:`~wkviz.errors.WkvizError` escaping ``render`` (bad input the page did not
    handle where it happened) becomes an ``st.error`` with its message; the sidebar is still drawn.

    Parameters
    ----------
    render : callable
        Draws the page body; takes no arguments.
    title : str
        Page title for the browser tab.
    """
    st.set_page_config(page_title=f"{title} · wkviz", page_icon="⚛️", layout="wide",
                       initial_sidebar_state="expanded")
    st.markdown(_PAGE_CSS, unsafe_allow_html=True)
    init_state()
    with st.sidebar:
        navigation()
        session_box = st.container()
    try:
        render()
    except WkvizError as exc:
        st.error(str(exc), icon=":material/error:")
    # Drawn after the page so it shows what the page has just computed (kernels, a fit).
    with session_box:
        try:
            sidebar()
        except WkvizError as exc:
            st.error(str(exc), icon=":material/error:")


def page_link(page: str, label: str, icon: str | None = None) -> bool:
    """``st.page_link`` to a page of the app; plain text when that page is not registered.

    Pages are registered when Streamlit runs ``app.py`` (the usual ``streamlit run app.py``). A page file run
    on its own (``streamlit run pages/2_Kernels.py``, ``AppTest.from_file("pages/2_Kernels.py")``) knows no
    other page; a link there would raise, so the label is shown without a link.
    """
    try:
        st.page_link(page, label=label, icon=icon)
        return True
    except StreamlitAPIException:
        st.markdown(f"{label}")
        return False


def navigation() -> None:
    """The sidebar's page list, by section (:data:`NAVIGATION`)."""
    linked = True
    for section, items in NAVIGATION.items():
        st.caption(section)
        for item in items:
            linked = page_link(item.path, item.label, item.icon) and linked
    if not linked:
        st.caption("This page was started on its own; run `streamlit run app.py` to move between pages.")
    st.divider()


DEFAULT_SAMPLE = "qm9"
DEFAULT_N = {"qm9": 300, "gold": 200, "teaching": 10_000}
MEMORY_BUDGET = 2 * 2**30

# Defaults of every persistent widget. Widgets are created with key= only (no value=), so these are the single
# source of initial values and Streamlit never warns about a value set twice.
_H = Hypers()
WIDGET_DEFAULTS = {
    "data.source": "Bundled data set",
    "data.sample": DEFAULT_SAMPLE,
    "data.n": DEFAULT_N[DEFAULT_SAMPLE],
    "data.qm9_n": 500,
    "data.qm9_seed": 0,
    "data.split": "random",
    "data.test_fraction": 0.2,
    "data.seed": 0,
    "data.view_id": 0,
    "kernels.nu_max": _H.nu_max,
    "kernels.lambda_max": _H.lambda_max,
    "kernels.cutoff": _H.cutoff,
    "kernels.cutoff_width": _H.cutoff_width,
    "kernels.density_width": _H.density_width,
    "kernels.scaling_on": _H.density_scaling is not None,
    "kernels.density_scaling": _H.density_scaling if _H.density_scaling is not None else 2.0,
    "kernels.radial_on": _H.radial_scale is not None,
    "kernels.radial_scale": _H.radial_scale if _H.radial_scale is not None else 1.5,
    "kernels.radial_exponent": _H.radial_exponent,
    "kernels.species_coupling": _H.species_coupling,
    "kernels.hydrogen_weight": _H.hydrogen_weight,
    "kernels.hydrogen_center_weight": _H.hydrogen_center_weight,
    "kernels.normalization": _H.normalization,
    "kernels.atomic": False,
    "kernels.show_nu": [],
    "models.weights": "free per ν (positive)",
    "models.selection": "GP evidence",
    "models.folds": 5,
    "models.compare": True,
    "models.intensive": False,
    "curves.intensive": False,
    "models.view_id": None,
    "kernels.store_path": "",
    "models.sparse_kind": "structures",
    "models.sparse_m": 200,
    "curves.repeats": 3,
    "curves.n_sizes": 5,
    "curves.metric": "mae",
    "map.level": "structures",
    "map.nu": "mixed",
    "map.color": "target",
    "map.n_envs": 40,
    "teach.pair": 0,
    "teach.nu": 2,
    "kernels.order": "data order",
    "models.show": "mixed",
    "teach.alpha": 0,
    "teach.beta": 0,
    "teach.gamma": 0,
    "teach.cost_nu_max": 5,
    "teach.cost_n_radial": 2,
    "teach.cost_budget_mb": 512,
    "teach.cost_nu_basis": 3,
}

def _persist_kwargs() -> dict:
    import inspect

    try:
        return {"persist_state": "session"} if "persist_state" in inspect.signature(st.slider).parameters else {}
    except (TypeError, ValueError):
        return {}


#: Keyword arguments that make a keyed widget keep its value while the user is on another page. Streamlit drops
#: the state of widgets that are not rendered in a run; recent versions keep it with ``persist_state="session"``,
#: older ones through the re-assignment in :func:`init_state`. Every persistent page widget uses ``**KEEP``.
KEEP = _persist_kwargs()

# Widget keys that must never be written back (buttons, uploads, chart selections): Streamlit refuses it.
_NOT_PERSISTED_SUFFIXES = (".btn", ".upload", ".chart", ".dl")


def init_state() -> None:
    """Defaults for every widget (widgets are created with ``key=`` only, so these are the single source of
    initial values), and on Streamlit versions without ``persist_state`` the documented re-assignment that keeps
    other pages' widget values alive across page switches."""
    ss = st.session_state
    for key, value in WIDGET_DEFAULTS.items():
        if key not in ss:
            ss[key] = value
    if KEEP:
        return
    for key in list(ss.keys()):
        if not isinstance(key, str) or "." not in key or key.startswith("wk.") or key.endswith(_NOT_PERSISTED_SUFFIXES):
            continue
        value = ss[key]
        if value is None or isinstance(value, (bool, int, float, str)) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value)
        ):
            ss[key] = value


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
    """A failed background job: the message for bad input; message plus details for a bug."""
    if isinstance(job.error, WkvizError):
        st.error(str(job.error), icon=":material/error:")
    else:
        st.error(f"The computation failed unexpectedly: {job.state().message}. Please report this with the "
                 "details below.", icon=":material/bug_report:")
        if job.error_traceback:
            with st.expander("details"):
                st.code(job.error_traceback, language="text")


# --------------------------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """The structures the session works on, with their content digest."""

    name: str  # "qm9", "gold", "teaching", "upload", "qm9pack"
    title: str
    frames: list
    digest: str
    file_stem: str  # suggested file name (without extension) for downloads and CLI commands
    notes: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.frames)


@st.cache_resource(show_spinner="Reading the bundled data set…")
def _sample(name: str):
    from wkviz import data

    return data.load_sample(name)


def bundled_dataset(name: str, n: int) -> Dataset:
    """The first ``n`` structures of a bundled set (the QM9 subset is already a random draw)."""
    from wkviz import data

    frames = _sample(name)
    n = int(min(max(n, 2), len(frames)))
    frames = frames[:n]
    title = data.SAMPLE_SETS[name]["title"]
    short = {"qm9": "QM9 subset", "gold": "Gold (EMT)", "teaching": "Teaching set"}.get(name, title)
    label = f"{short}: first {n} of {len(_sample(name)):,}" if n < len(_sample(name)) else title
    return Dataset(name, label, frames, cache.hash_structures(frames), f"{name}_{n}")


@st.cache_resource(show_spinner="Reading the uploaded file…", max_entries=4)
def _read_upload(digest: str, filename: str, _content: bytes):
    from wkviz import data

    return data.read_structures(_content, filename=filename)


def upload_dataset(filename: str, content: bytes) -> Dataset:
    digest = cache.hash_bytes(content)
    frames = _read_upload(digest, filename, content)
    stem = filename.split("/")[-1].split(".")[0] or "upload"
    return Dataset("upload", f"{filename} ({len(frames)} structures)", frames, cache.hash_structures(frames), stem)


@st.cache_resource(show_spinner="Drawing molecules from QM9 (qm9pack)…", max_entries=4)
def _qm9(n: int, seed: int):
    from wkviz import data

    return data.load_qm9(n, seed)


def qm9_dataset(n: int, seed: int) -> Dataset:
    frames = _qm9(int(n), int(seed))
    return Dataset("qm9pack", f"QM9 (qm9pack): {n} molecules, seed {seed}", frames, cache.hash_structures(frames),
                   f"qm9_{n}_seed{seed}")


def qm9pack_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("qm9pack") is not None


def dataset() -> Dataset:
    """The session's data set; the bundled QM9 subset until the user chooses another."""
    ss = st.session_state
    if "wk.dataset" not in ss:
        ss["wk.dataset"] = bundled_dataset(DEFAULT_SAMPLE, ss.get("data.n", DEFAULT_N[DEFAULT_SAMPLE]))
    return ss["wk.dataset"]


def set_dataset(ds: Dataset) -> None:
    """Switch data set; results keyed by content stay cached, the session's current selections are reset."""
    ss = st.session_state
    old = ss.get("wk.dataset")
    ss["wk.dataset"] = ds
    if old is None or old.digest != ds.digest:
        for key in ("wk.fit", "wk.lc", "wk.selected", "wk.map_selected.structures",
                    "wk.map_selected.atomic environments", "wk.map_job"):
            ss.pop(key, None)
        ss["data.view_id"] = 0
        targets = target_infos(ds)
        keys = [t.key for t in targets]
        if ss.get("data.target") not in keys:
            ss["data.target"] = default_target(targets)


@st.cache_data(show_spinner=False, max_entries=16)
def _target_infos(digest: str, _frames):
    from wkviz import data

    return data.describe_targets(_frames)


def target_infos(ds: Dataset | None = None):
    ds = ds or dataset()
    return _target_infos(ds.digest, ds.frames)


def default_target(targets) -> str | None:
    keys = [t.key for t in targets]
    for preferred in ("U0", "energy", "gap"):
        if preferred in keys:
            return preferred
    scalars = [t.key for t in targets if t.kind == "scalar"]
    return scalars[0] if scalars else (keys[0] if keys else None)


def target_info():
    """The selected target's TargetInfo, or None when the data set has no learnable target."""
    targets = target_infos()
    if not targets:
        return None
    ss = st.session_state
    keys = [t.key for t in targets]
    if ss.get("data.target") not in keys:
        ss["data.target"] = default_target(targets)
    return next(t for t in targets if t.key == ss["data.target"])


def sync_target_defaults(info) -> None:
    """Reset target-dependent widget defaults (mean vs sum kernel) when the target changed.

    Call before the widgets are created (Models and Learning curves pages)."""
    ss = st.session_state
    if info is None or ss.get("wk.defaults_for_target") == info.key:
        return
    intensive = not info.extensive and info.kind != "atomic"
    ss["models.intensive"] = intensive
    ss["curves.intensive"] = intensive
    ss["wk.defaults_for_target"] = info.key


@st.cache_data(show_spinner=False, max_entries=32)
def _target_values(digest: str, key: str, _frames):
    from wkviz import data

    return data.get_target(_frames, key)


def target_values(key: str | None = None) -> np.ndarray:
    ds = dataset()
    key = key or st.session_state.get("data.target")
    return _target_values(ds.digest, key, ds.frames)


@st.cache_data(show_spinner=False, max_entries=32)
def _split(digest: str, n: int, method: str, test_fraction: float, seed: int, kernel_key: str | None, _K=None):
    from wkviz import data

    if method == "fps" and _K is not None:
        n_train = n - max(1, int(round(test_fraction * n)))
        return data.fps_split(_K, n_train, seed=seed)
    return data.random_split(n, float(test_fraction), int(seed))


def _raw_split():
    ds = dataset()
    ss = st.session_state
    method = ss.get("data.split", "random")
    kres, key = None, None
    if method == "fps":
        kres, key = current_kernel()
    K = None
    if kres is not None:
        nu = min(2, kres.K.shape[0] - 1)
        K = figures.normalized_kernel(kres.K[nu])
    return _split(ds.digest, ds.n, method if K is not None else "random", float(ss.get("data.test_fraction", 0.2)),
                  int(ss.get("data.seed", 0)), key if K is not None else None, K)


def split() -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices for the current data set and split widgets.

    Farthest-point sampling needs a kernel; it uses the current ν=2 kernel (SOAP-like) when one is computed and
    falls back to a random split otherwise. Test structures with elements absent from training are moved to
    training (:func:`wkviz.data.cover_elements`; listed by :func:`moved_to_train`).
    """
    ds = dataset()
    train, test = _raw_split()
    train, test, _ = _covered_split(ds.digest, train, test, ds.frames)
    return train, test


@st.cache_data(show_spinner=False, max_entries=32)
def _covered_split(digest: str, train, test, _frames):
    from wkviz import data

    return data.cover_elements(_frames, train, test)


def moved_to_train() -> list[int]:
    """Test structures that :func:`split` moved to training because of elements unseen in training."""
    ds = dataset()
    train, test = _raw_split()
    return sorted(int(i) for i in _covered_split(ds.digest, train, test, ds.frames)[2])


@st.cache_data(show_spinner=False, max_entries=16)
def _summary(digest: str, _frames):
    from wkviz import data

    return data.summarize(_frames)


def summary(ds: Dataset | None = None) -> dict:
    ds = ds or dataset()
    return _summary(ds.digest, ds.frames)


def formulas(ds: Dataset | None = None) -> list[str]:
    ds = ds or dataset()
    return _formulas(ds.digest, ds.frames)


@st.cache_data(show_spinner=False, max_entries=16)
def _formulas(digest: str, _frames):
    return [a.get_chemical_formula() for a in _frames]


# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------

def hypers_from_widgets() -> Hypers:
    """Hypers from the Kernels form's widgets (raises ValueError with a clear message when invalid)."""
    ss = st.session_state
    return Hypers(
        nu_max=int(ss["kernels.nu_max"]),
        lambda_max=int(ss["kernels.lambda_max"]),
        cutoff=float(ss["kernels.cutoff"]),
        cutoff_width=float(ss["kernels.cutoff_width"]),
        density_width=float(ss["kernels.density_width"]),
        density_scaling=float(ss["kernels.density_scaling"]) if ss["kernels.scaling_on"] else None,
        radial_scale=float(ss["kernels.radial_scale"]) if ss["kernels.radial_on"] else None,
        radial_exponent=float(ss["kernels.radial_exponent"]),
        species_coupling=float(ss["kernels.species_coupling"]),
        hydrogen_weight=float(ss["kernels.hydrogen_weight"]),
        hydrogen_center_weight=float(ss["kernels.hydrogen_center_weight"]),
        normalization=str(ss["kernels.normalization"]),
    )


def applied_hypers() -> Hypers:
    """The hyperparameters of the last submitted Kernels form (defaults until then)."""
    ss = st.session_state
    if "wk.hypers" not in ss:
        ss["wk.hypers"] = hypers_from_widgets()
    return ss["wk.hypers"]


def kernel_request(info=None) -> dict:
    """What the current target needs from the engine: tensor rank and atom-level kernels."""
    info = info if info is not None else target_info()
    kind = info.kind if info is not None else "scalar"
    return {
        "tensor_rank": 1 if kind == "vector" else 2 if kind == "tensor" else 0,
        "atomic": kind == "atomic" or bool(st.session_state.get("kernels.atomic", False)),
    }


def kernel_key(ds: Dataset, hypers: Hypers, request: dict) -> str:
    return "kernel:" + cache.hash_key(ds.digest, hypers, request["tensor_rank"], request["atomic"])


def find_kernel(ds: Dataset, hypers: Hypers, request: dict):
    """A stored kernel for this request, or one computed with more (tensor or atomic kernels include the
    invariant ones), as (KernelResult or None, key of the exact request)."""
    key = kernel_key(ds, hypers, request)
    rank, atomic = request["tensor_rank"], request["atomic"]
    ranks = [rank] + ([(1, 2)] if rank else [1, 2, (1, 2)])
    atomics = [atomic] + ([] if atomic else [True])
    for r in ranks:
        for a in atomics:
            res = cache.RESULTS.get(kernel_key(ds, hypers, {"tensor_rank": r, "atomic": a}))
            if res is not None:
                return res, key
    return None, key


def current_kernel():
    """(KernelResult, key) for the current data set, applied hypers and target, or (None, key)."""
    return find_kernel(dataset(), applied_hypers(), kernel_request())


def start_kernel_job(ds: Dataset, hypers: Hypers, request: dict) -> cache.BackgroundJob:
    """Start computing kernels in a worker thread; the page polls the job stored in the session."""
    from wkviz.engine.kernels import WignerKernel

    key = kernel_key(ds, hypers, request)
    frames = ds.frames
    engine = WignerKernel(hypers, memory_budget=MEMORY_BUDGET)

    def work(progress, cancel):
        return engine.compute(frames, atomic=request["atomic"], tensor_rank=request["tensor_rank"],
                              progress=progress, cancel=cancel)

    job = cache.BackgroundJob(work, label=f"kernels ν≤{hypers.nu_max} on {ds.n} structures", key=key).start()
    st.session_state["wk.kernel_job"] = job
    st.session_state["wk.kernel_job_key"] = key
    return job


def estimate(ds: Dataset, hypers: Hypers, request: dict) -> dict:
    """WignerKernel.estimate for a request (cheap, cached): pairs, output bytes, seconds, whether it fits."""
    return _estimate(ds.digest, hypers.to_json(), request["tensor_rank"], request["atomic"], ds.frames)


@st.cache_data(show_spinner=False, max_entries=64)
def _estimate(digest: str, hypers_json: str, tensor_rank, atomic: bool, _frames):
    from wkviz.engine.kernels import WignerKernel

    return WignerKernel(Hypers.from_json(hypers_json), memory_budget=MEMORY_BUDGET).estimate(
        _frames, atomic=atomic, tensor_rank=tensor_rank)


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
    for unit in ("B", "kB", "MB", "GB"):
        if b < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GB"


def poll_job(job: cache.BackgroundJob, *, cancel_key: str, what: str) -> None:
    """Progress bar with ETA and a cancel button until ``job`` ends; then rerun so the page shows the result.

    A click on "Cancel" reruns the script (interrupting this loop); the next run sees the button pressed and
    sets the job's cancel flag, which the engine checks between tiles.
    """
    if st.session_state.get(cancel_key):
        job.cancel()
    cols = st.columns([5, 1])
    with cols[1]:
        st.button("Cancel", key=cancel_key, icon=":material/cancel:", disabled=job.cancel_requested,
                  width="stretch")
    with cols[0]:
        bar = st.progress(0.0, text=f"{what}: starting…")
    while not job.done:
        s = job.state()
        if s.message:
            text = f"{what}: {s.message}"
        elif job.cancel_requested:
            text = f"{what}: cancelling…"
        else:
            text = (f"{what}: {100 * s.fraction:.0f}% · elapsed {format_seconds(s.elapsed)}"
                    f" · about {format_seconds(s.eta_seconds)} left")
        bar.progress(min(max(s.fraction, 0.0), 1.0), text=text)
        time.sleep(0.25)
    st.rerun()


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------

WEIGHT_MODES = {"free per ν (positive)": "free", "kernel exponential c_ν = C·α^ν/ν!": "exponential"}
SELECTIONS = {"GP evidence": "evidence", "k-fold cross-validation": "cv"}


def _self_kernels(kres, kind: str, test: np.ndarray, atoms_test: np.ndarray | None):
    """Diagonal self-kernels of the test rows, for the GP predictive standard deviation."""
    if kind == "scalar":
        return np.einsum("vii->vi", kres.K[:, test][:, :, test])
    if kind == "vector":
        Kt = kres.K_vector[:, test][:, :, :, test]  # [ν, n, 3, n, 3]
        return np.einsum("viaia->via", Kt)
    if kind == "atomic":
        return np.stack([np.diag(kres.K_atomic[nu])[atoms_test] for nu in range(kres.K_atomic.shape[0])])
    return None


def fit_models(kres, frames, target_key: str, train, test, *, names, weights: str, selection: str, folds: int,
               intensive: bool, progress=None, cancel=None) -> dict:
    """Fit each named model on ``train`` (hyperparameters chosen on train only, by the GP evidence or k-fold CV as
    ``selection`` says) and predict ``test``.

    Runs in a worker thread (no streamlit calls). Returns a dict with the test truth and, per model, the
    predictions, predictive standard deviations (when the model gives them), metrics and weights.
    """
    from wkviz import evaluation, models

    train = np.asarray(train)
    test = np.asarray(test)
    kernels = models.KernelSet.from_result(kres)
    target = models.TargetData.from_frames(frames, target_key)
    kind = target.kind
    tr_k, te_k = kernels.subset(train, train), kernels.subset(test, train)
    tr_d, te_d = target.subset(train), target.subset(test)
    atoms_test = None
    if kind == "atomic":
        offsets = np.concatenate([[0], np.cumsum(target.n_atoms)])
        atoms_test = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in test])
    K_diag = _self_kernels(kres, kind, test, atoms_test)
    nu_max = kernels.nu_max
    out = {"kind": kind, "unit": target.unit, "y_true": te_d.values, "models": {}, "order": list(names)}
    start = time.perf_counter()
    for i, name in enumerate(names):
        models.check_cancel(cancel)
        t0 = time.perf_counter()
        params = dict(weights=weights, selection=selection, n_folds=int(folds))
        std = None
        if kind == "scalar":
            est = models.make_regressor(kind, name, nu_max=nu_max, intensive=intensive, **params)
            est.fit(tr_k.K, tr_d.values, counts=tr_d.counts, species=tr_d.species, n_atoms=tr_d.n_atoms,
                    cancel=cancel)
            pred, std = est.predict(te_k.K, counts=te_d.counts, species=te_d.species, n_atoms=te_d.n_atoms,
                                    K_diag=K_diag, return_std=True)
        elif kind == "vector":
            est = models.make_regressor(kind, name, nu_max=nu_max, intensive=intensive, **params)
            est.fit(tr_k.K_vector, tr_d.values, n_atoms=tr_d.n_atoms, cancel=cancel)
            pred, std = est.predict(te_k.K_vector, n_atoms=te_d.n_atoms, K_diag=K_diag, return_std=True)
        elif kind == "atomic":
            est = models.make_regressor(kind, name, nu_max=nu_max, **params)
            est.fit(tr_k.K_atomic, tr_d.values, numbers=tr_d.numbers, structure_index=tr_d.structure_of_atom(),
                    cancel=cancel)
            pred, std = est.predict(te_k.K_atomic, numbers=te_d.numbers, K_diag=K_diag, return_std=True)
        else:
            pred, est = models.fit_predict(tr_k, tr_d, te_k, te_d, model=name, intensive=intensive, cancel=cancel,
                                           **params)
        core = est.model_
        m = evaluation.metrics(te_d.values, pred, unit=target.unit)
        out["models"][name] = {
            "pred": np.asarray(pred), "std": None if std is None else np.asarray(std), "metrics": m.as_dict(),
            "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
            "cv_mae": float(core.cv_mae_), "cv_rmse": float(core.cv_rmse_), "seconds": time.perf_counter() - t0,
            "noise_std": float(getattr(core, "noise_std_", float("nan"))),
        }
        if progress is not None:
            frac = (i + 1) / len(names)
            elapsed = time.perf_counter() - start
            progress(frac, elapsed * (1 - frac) / frac)
    return out


def start_fit_job(ds: Dataset, kres, kkey: str, target_key: str, train, test, *, names, weights: str,
                  selection: str, folds: int, intensive: bool) -> tuple[cache.BackgroundJob, str]:
    key = "fit:" + cache.hash_key(kkey, ds.digest, target_key, np.asarray(train), np.asarray(test), list(names),
                                  weights, selection, int(folds), bool(intensive))
    frames = ds.frames

    def work(progress, cancel):
        return fit_models(kres, frames, target_key, train, test, names=names, weights=weights, selection=selection,
                          folds=folds, intensive=intensive, progress=progress, cancel=cancel)

    meta = {"key": key, "dataset": ds.digest, "kernel_key": kkey, "target": target_key,
            "train": np.asarray(train), "test": np.asarray(test), "names": list(names), "weights": weights,
            "selection": selection, "folds": int(folds), "intensive": bool(intensive)}
    job = cache.BackgroundJob(work, label=f"fitting {len(names)} model{'s' if len(names) > 1 else ''}", key=key,
                              use_engine_lock=False, meta=meta).start()
    st.session_state["wk.fit_job"] = job
    st.session_state["wk.fit_job_key"] = key
    return job, key


# --------------------------------------------------------------------------------------------------------------
# Large data sets: kernel tiles into an on-disk store, sparse models
# --------------------------------------------------------------------------------------------------------------

#: A data set counts as *large* when its kernel request (``WignerKernel.estimate``) is estimated to take longer
#: than ``LARGE_SECONDS`` or to produce more than ``LARGE_BYTES`` of kernels (a quarter of the memory budget:
#: the kernels are not the only thing a session holds). Above either limit the Kernels page also offers tiles on
#: Dask into an on-disk store, and the Models page the sparse model. The environment variables
#: ``WKVIZ_LARGE_SECONDS`` and ``WKVIZ_LARGE_BYTES`` override both, read on every run (the tests lower them to
#: 0 to reach these options on a small data set; a server can raise them).
LARGE_SECONDS = 120.0
LARGE_BYTES = MEMORY_BUDGET // 4
#: Worker processes (one thread each) of the LocalCluster a tile job starts; also fixes the tile size of new
#: stores, so a store has the same layout whether its tiles ran on the cluster or in this process.
TILE_WORKERS = 2


def large_limits() -> tuple[float, float]:
    """(seconds, bytes) above which a data set counts as large (:data:`LARGE_SECONDS`, :data:`LARGE_BYTES`,
    or their environment overrides)."""

    def read(name: str, default: float) -> float:
        text = os.environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:  # a typo in a server's environment must not take every page down
            return default
        return value if value >= 0 else default

    return read("WKVIZ_LARGE_SECONDS", LARGE_SECONDS), read("WKVIZ_LARGE_BYTES", float(LARGE_BYTES))


def is_large(est: dict | None) -> bool:
    """Whether an estimate (:func:`estimate`) is above the large-data limits."""
    if est is None:
        return False
    seconds, nbytes = large_limits()
    return float(est["seconds"]) > seconds or float(est["output_bytes"]) > nbytes


def large_rule() -> str:
    """The large-data limits in words, for the pages."""
    seconds, nbytes = large_limits()
    return f"an estimated time above {format_seconds(seconds)} or kernels above {format_bytes(nbytes)}"


def store_root() -> Path:
    """Per-user directory of kernel stores: ``$XDG_CACHE_HOME/wkviz/stores`` (``~/.cache/wkviz/stores``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wkviz" / "stores"


@st.cache_data(show_spinner=False, max_entries=64)
def _store_key(digest: str, hypers_json: str, tensor_rank, _frames) -> str:
    from wkviz.scale.store import kernel_kinds, store_key

    return store_key(_frames, None, Hypers.from_json(hypers_json), kernel_kinds(tensor_rank))["key"]


def default_store_path(ds: Dataset, hypers: Hypers, request: dict) -> Path:
    """Where the store of this request goes unless the user names another directory: under :func:`store_root`,
    named by the content hash of the structures, hyperparameters and kernel kinds (the store's own key)."""
    return store_root() / _store_key(ds.digest, hypers.to_json(), request["tensor_rank"], ds.frames)[:16]


def store_path(ds: Dataset, hypers: Hypers, request: dict) -> Path:
    """The store directory typed on the Kernels page (``kernels.store_path``), or the default one."""
    typed = str(st.session_state.get("kernels.store_path") or "").strip()
    return Path(typed).expanduser() if typed else default_store_path(ds, hypers, request)


@dataclass(frozen=True)
class StoreStatus:
    """What a store directory holds for the current request."""

    path: str
    exists: bool
    tiles_done: int
    tiles_total: int
    tile_size: int

    @property
    def complete(self) -> bool:
        return self.exists and self.tiles_done == self.tiles_total


@st.cache_data(show_spinner=False, max_entries=32)
def _store_status(path: str, mtime_ns: int, digest: str, hypers_json: str, tensor_rank, _frames) -> StoreStatus:
    from wkviz.scale.store import KernelStore

    store = KernelStore.open(path, _frames, hypers=Hypers.from_json(hypers_json), tensor_rank=tensor_rank)
    return StoreStatus(str(path), True, store.n_done, store.n_tiles, store.tile_size)


def store_status(path, ds: Dataset, hypers: Hypers, request: dict) -> StoreStatus:
    """Finished and total tiles of the store at ``path`` for this request, creating nothing.

    Raises
    ------
    WkvizError
        The directory holds the store of another request (other structures, hyperparameters or kernel kinds)
        or something that is not a kernel store: the store's own message, naming both content hashes.
    """
    import math

    from wkviz.scale.distributed import choose_tile_size

    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file; a kernel store is a directory, give a new or empty directory")
        if path.is_dir() and any(path.iterdir()):
            # the manifest is replaced atomically inside the directory when tiles land, which changes its mtime
            return _store_status(str(path), path.stat().st_mtime_ns, ds.digest, hypers.to_json(),
                                 request["tensor_rank"], ds.frames)
    except OSError as exc:
        raise InputError(f"cannot read the store directory {path} ({exc.strerror or exc}); choose a directory you "
                         "can read and write") from None
    t = choose_tile_size(ds.n, None, TILE_WORKERS)
    nb = math.ceil(ds.n / t)
    return StoreStatus(str(path), False, 0, nb * (nb + 1) // 2, t)


def _tiles_in_process(store, frames, hypers: Hypers, tensor_rank, progress, cancel) -> int:
    """The missing tiles of ``store`` one after another in this process, with the local engine (what the
    cluster's workers would run), recorded in the store's manifest like a cluster run. Returns tiles computed."""
    from wkviz.engine.kernels import WignerKernel
    from wkviz.models import check_cancel

    engine = WignerKernel(hypers, memory_budget=MEMORY_BUDGET)
    todo = store.missing_tiles()
    total, done_before = store.n_tiles, store.n_done
    store.begin_run(workers=1, scheduler="in-process (no cluster)", tiles_missing=len(todo))
    status, computed, t0 = "failed", 0, time.perf_counter()
    try:
        for bi, bj in todo:
            check_cancel(cancel)
            rows = frames[store.tile_rows(bi)]
            # a diagonal tile of a symmetric store is itself a symmetric request, as on the workers
            cols = None if bi == bj else frames[store.tile_cols(bj)]
            res = engine.compute(rows, cols, tensor_rank=tensor_rank, cancel=cancel)
            arrays = {"K": res.K}
            for kind in ("K_vector", "K_tensor"):
                if getattr(res, kind) is not None:
                    arrays[kind] = getattr(res, kind)
            store.write_tile(bi, bj, arrays)
            computed += 1
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress((done_before + computed) / total, elapsed * (len(todo) - computed) / computed)
        status = "finished"
    except Cancelled:
        status = "cancelled"
        raise
    finally:
        store.end_run(status)
    return computed


def compute_store_tiles(frames, hypers: Hypers, request: dict, path, *, n_workers: int = TILE_WORKERS,
                        progress=None, cancel=None):
    """The Kernels page's tiled computation (runs in a worker thread; no streamlit calls).

    Opens (or creates) the store at ``path`` for the symmetric request; if tiles are missing, starts a
    ``LocalCluster`` of ``n_workers`` single-threaded workers and runs :func:`wkviz.scale.distributed.compute_tiles`
    on it, shutting the cluster down when the job ends (finished, cancelled or failed). If the cluster cannot be
    started, the missing tiles are computed in this process instead, into the same store, and the returned
    information says why. A complete store is read back without starting anything.

    Returns
    -------
    result : KernelResult or None
        The whole kernel, or None when it exceeds :data:`MEMORY_BUDGET` (it is complete in the store then).
    info : dict
        ``path``, ``tiles_total``, ``tiles_reused``, ``tiles_computed``, ``tile_size``, ``where`` (a sentence),
        ``fallback`` (why no cluster, or None), ``worker_pids`` (of the cluster, all shut down on return),
        ``seconds``, ``in_memory``.
    """
    from wkviz.scale import distributed
    from wkviz.engine.kernels import WignerKernel
    from wkviz.scale.store import KernelStore

    start = time.perf_counter()
    if request["atomic"]:
        raise InputError("atom-level kernels are not computed as tiles; untick 'atom-level kernels too' (per-atom "
                         "targets need the in-memory computation on fewer structures)")
    rank = request["tensor_rank"]
    frames = list(frames)
    try:
        store = KernelStore.open(path, frames, hypers=hypers, tensor_rank=rank,
                                 tile_size=distributed.choose_tile_size(len(frames), None, n_workers))
    except OSError as exc:
        raise InputError(f"cannot create the kernel store at {path} ({exc.strerror or exc}); choose a directory "
                         "you can write to") from None
    info = {"path": str(path), "tiles_total": store.n_tiles, "tiles_reused": store.n_done, "tiles_computed": 0,
            "tile_size": store.tile_size, "fallback": None, "worker_pids": [], "timings": {}}
    if store.complete:
        info["where"] = "with nothing to compute: every tile was already in the store"
    else:
        with contextlib.ExitStack() as stack:  # closes the cluster however the job ends
            client = None
            t0 = time.perf_counter()
            try:
                # local_cluster keeps its workers from re-running this page (Streamlit's __main__ script)
                client = stack.enter_context(distributed.local_cluster(n_workers))
            except Exception as exc:  # noqa: BLE001 - any failure to start a cluster falls back to this process
                info["fallback"] = f"{type(exc).__name__}: {exc}".strip()
            if client is not None:
                with contextlib.suppress(Exception):  # only reported, so the page can say they were shut down
                    info["worker_pids"] = sorted(int(p) for p in client.run(os.getpid).values())
                info["timings"]["cluster start-up"] = time.perf_counter() - t0
                run = distributed.compute_tiles(frames, hypers=hypers, store=store, client=client, tensor_rank=rank,
                                                memory_budget=MEMORY_BUDGET, assemble=False, progress=progress,
                                                cancel=cancel)
                info["tiles_computed"] = run.tiles_computed
                info["where"] = (f"on a local Dask cluster of {run.workers} single-threaded worker processes, "
                                 "shut down when the job ended")
            else:
                info["tiles_computed"] = _tiles_in_process(store, frames, hypers, rank, progress, cancel)
                info["where"] = ("in this process, one tile after another, because a local Dask cluster could not "
                                 f"be started ({info['fallback']})")
            info["timings"]["tiles"] = time.perf_counter() - t0
    result = None
    if store.output_bytes() <= MEMORY_BUDGET:
        t0 = time.perf_counter()
        result = store.to_result()
        info["timings"]["read from the store"] = time.perf_counter() - t0
        result.seconds = time.perf_counter() - start
        result.n_pairs = WignerKernel(hypers).estimate(frames)["n_pairs"]  # pairs the kernel represents
        result.timings = dict(info["timings"])
    info["seconds"] = time.perf_counter() - start
    info["in_memory"] = result is not None
    return result, info


def start_tile_job(ds: Dataset, hypers: Hypers, request: dict, path) -> cache.BackgroundJob:
    """Start :func:`compute_store_tiles` in a worker thread as the session's kernel job (same progress, ETA and
    cancel as the in-memory computation); the kernel is stored under the request's key when it fits."""
    key = kernel_key(ds, hypers, request)
    frames = ds.frames
    path = Path(path)

    def work(progress, cancel):
        result, info = compute_store_tiles(frames, hypers, request, path, progress=progress, cancel=cancel)
        if result is not None:
            cache.RESULTS.put(key, result)
        return info

    job = cache.BackgroundJob(work, label=f"kernel tiles ν≤{hypers.nu_max} on {ds.n} structures",
                              meta={"tiles": True, "path": str(path), "key": key}).start()
    st.session_state["wk.kernel_job"] = job
    st.session_state["wk.kernel_job_key"] = key
    return job


SPARSE_ACTIVE = {"structures": "structures", "environments": "atomic environments"}


def sparse_model_name(n_active: int, active_kind: str) -> str:
    return f"sparse M={int(n_active)} {active_kind}"


@st.cache_data(show_spinner=False, max_entries=64)
def _sparse_estimate(digest: str, hypers_json: str, train, test, n_active: int, active_kind: str, _frames) -> dict:
    from wkviz.engine.kernels import WignerKernel

    engine = WignerKernel(Hypers.from_json(hypers_json), memory_budget=MEMORY_BUDGET)
    tr = [_frames[i] for i in train]
    te = [_frames[i] for i in test]
    # M active structures are stood in for by the first M training structures (a random sample in a random
    # split); M active environments by the first M atoms, computed as restricted centres like the real run
    if active_kind == "environments":
        n_atoms = sum(len(a) for a in tr)
        centers = np.arange(max(1, min(int(n_active), n_atoms)))
        nm = engine.estimate(tr, tr, centers_B=centers)
        tm = engine.estimate(te, tr, centers_B=centers) if te else {"n_pairs": 0, "seconds": 0.0}
    else:
        proxy = tr[:max(1, min(int(n_active), len(tr)))]
        nm = engine.estimate(tr, proxy)
        tm = engine.estimate(te, proxy) if te else {"n_pairs": 0, "seconds": 0.0}
    nn = engine.estimate(tr)
    return {"n_train": len(tr), "n_test": len(te), "n_active": int(n_active),
            "pairs_sparse": int(nm["n_pairs"] + tm["n_pairs"]), "seconds_sparse": nm["seconds"] + tm["seconds"],
            "pairs_exact": int(nn["n_pairs"]), "seconds_exact": nn["seconds"]}


def sparse_estimate(ds: Dataset, hypers: Hypers, train, test, n_active: int, active_kind: str) -> dict:
    """Cost of the sparse model's kernels (training × M and test × M) against the exact N × N kernel."""
    return _sparse_estimate(ds.digest, hypers.to_json(), np.asarray(train), np.asarray(test), int(n_active),
                            active_kind, ds.frames)


def fit_sparse_model(frames, target_key: str, train, test, *, hypers: Hypers, n_active: int, active_kind: str,
                     weights: str, folds: int, intensive: bool, K_diag=None, progress=None, cancel=None) -> dict:
    """Select M active structures or environments by FPS among the training structures, compute the kernels the
    sparse model needs (:func:`wkviz.models.sparse.sparse_kernels`), fit :class:`wkviz.models.sparse.SparseScalarRegressor`
    (mixed body orders, CV on the training set: the sparse model has no evidence search) and predict the test
    structures.

    Runs in a worker thread (no streamlit calls). Returns a dict shaped like :func:`fit_models`'s, with one
    model, so the page can show it next to the exact ones.
    """
    from wkviz import evaluation
    from wkviz import models
    from wkviz.models import sparse
    from wkviz.engine.kernels import WignerKernel

    train = np.asarray(train)
    test = np.asarray(test)
    target = models.TargetData.from_frames(frames, target_key)
    if target.kind != "scalar":
        raise InputError(f"the sparse model learns scalar targets only; `{target_key}` is a {target.kind} target: "
                         "use the exact model on fewer structures")
    if active_kind not in SPARSE_ACTIVE:
        raise InputError(f"active points must be one of {', '.join(SPARSE_ACTIVE)}, got {active_kind!r}")
    start = time.perf_counter()

    def report(fraction):
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress(fraction, elapsed * (1 - fraction) / fraction if fraction > 0.02 else None)

    tr_frames = [frames[i] for i in train]
    te_frames = [frames[i] for i in test]
    report(0.0)
    if active_kind == "structures":
        active = sparse.select_active(tr_frames, n_active, hypers, seed=0)
    else:
        active = sparse.select_active_environments(tr_frames, n_active, hypers, seed=0)
    report(0.1)
    models.check_cancel(cancel)
    engine = WignerKernel(hypers, memory_budget=MEMORY_BUDGET)
    kern = sparse.sparse_kernels(tr_frames, active, hypers, kind=active_kind, frames_test=te_frames, engine=engine,
                                 progress=lambda f, eta: report(0.1 + 0.6 * f), cancel=cancel)
    report(0.8)
    tr_d, te_d = target.subset(train), target.subset(test)
    n_atoms_active = tr_d.n_atoms[active] if active_kind == "structures" else np.ones(len(active))
    nu_max = kern["K_NM"].shape[0] - 1
    est = sparse.SparseScalarRegressor(intensive=intensive, nus=models.model_nus("mixed", nu_max), weights=weights,
                                       n_folds=int(folds))
    est.fit(kern["K_NM"], kern["K_MM"], tr_d.values, counts=tr_d.counts, species=tr_d.species, n_atoms=tr_d.n_atoms,
            n_atoms_active=n_atoms_active, cancel=cancel)
    out = est.predict(kern["K_TM"], counts=te_d.counts, species=te_d.species, n_atoms=te_d.n_atoms, K_diag=K_diag,
                      return_std=K_diag is not None)
    pred, std = out if K_diag is not None else (out, None)
    core = est.model_
    name = sparse_model_name(n_active, active_kind)
    m = evaluation.metrics(te_d.values, pred, unit=target.unit)
    report(1.0)
    return {"kind": "scalar", "unit": target.unit, "y_true": te_d.values, "order": [name], "active": active,
            "kernel_seconds": float(kern["seconds"]),
            "models": {name: {
                "pred": np.asarray(pred), "std": None if std is None else np.asarray(std), "metrics": m.as_dict(),
                "weights": {int(nu): float(core.weights_[nu]) for nu in core.nus_},
                "cv_mae": float(core.cv_mae_), "cv_rmse": float(core.cv_rmse_),
                "seconds": time.perf_counter() - start, "noise_std": float(core.noise_std_)}}}


def start_sparse_job(ds: Dataset, kres, target_key: str, train, test, *, hypers: Hypers, n_active: int,
                     active_kind: str, weights: str, folds: int, intensive: bool) -> cache.BackgroundJob:
    """Start :func:`fit_sparse_model` as the session's sparse job. With the exact kernels at hand (``kres``) the
    test self-kernels come from them and the predictions get GP error bars."""
    train, test = np.asarray(train), np.asarray(test)
    K_diag = None if kres is None else _self_kernels(kres, "scalar", test, None)
    key = "sparse:" + cache.hash_key(ds.digest, hypers, target_key, train, test, int(n_active), active_kind, weights,
                                     int(folds), bool(intensive), K_diag is not None)
    frames = ds.frames

    def work(progress, cancel):
        return fit_sparse_model(frames, target_key, train, test, hypers=hypers, n_active=n_active,
                                active_kind=active_kind, weights=weights, folds=folds, intensive=intensive,
                                K_diag=K_diag, progress=progress, cancel=cancel)

    meta = {"key": key, "dataset": ds.digest, "target": target_key, "train": train, "test": test, "hypers": hypers,
            "n_active": int(n_active), "active_kind": active_kind, "weights": weights, "folds": int(folds),
            "intensive": bool(intensive), "name": sparse_model_name(n_active, active_kind)}
    job = cache.BackgroundJob(work, label=f"sparse model on {int(n_active)} active {SPARSE_ACTIVE[active_kind]}",
                              key=key, meta=meta).start()
    st.session_state["wk.sparse_job"] = job
    return job


def sparse_python(meta: dict, train_name: str, test_name: str) -> str:
    """Python that reproduces a sparse fit of the Models page from the downloaded train and test files."""
    select = "select_active" if meta["active_kind"] == "structures" else "select_active_environments"
    n_act = ("[len(train[i]) for i in active]" if meta["active_kind"] == "structures" else "[1] * len(active)")
    return "\n".join([
        "from ase.io import read",
        "from wkviz import Hypers, evaluation, models, sparse",
        "",
        f"h = Hypers.from_json({meta['hypers'].to_json()!r})",
        f"train, test = read({train_name!r}, ':'), read({test_name!r}, ':')",
        f"active = sparse.{select}(train, {meta['n_active']}, h, seed=0)",
        f"k = sparse.sparse_kernels(train, active, h, kind={meta['active_kind']!r}, frames_test=test)",
        f"tr = models.TargetData.from_frames(train, {meta['target']!r})",
        f"te = models.TargetData.from_frames(test, {meta['target']!r}, species=tr.species)",
        f"model = sparse.SparseScalarRegressor(intensive={meta['intensive']}, weights={meta['weights']!r}, "
        f"n_folds={meta['folds']})",
        "model.fit(k['K_NM'], k['K_MM'], tr.values, counts=tr.counts, species=tr.species, n_atoms=tr.n_atoms,",
        f"          n_atoms_active={n_act})",
        "pred = model.predict(k['K_TM'], counts=te.counts, species=te.species, n_atoms=te.n_atoms)",
        "print(evaluation.metrics(te.values, pred).as_dict())",
    ])


# --------------------------------------------------------------------------------------------------------------
# Downloads and reproducibility
# --------------------------------------------------------------------------------------------------------------

@st.cache_resource
def _png_status():
    return figures.png_export_status()


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
        items.append(("PNG", f"{name}.png", lambda f=fig: figures.figure_png(f), "image/png"))
    if table is not None:
        items.append(("CSV", f"{name}.csv", figures.table_csv(table), "text/csv"))
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
        text = figures.config_json(**config)
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
    return name, (lambda fr=frames: figures.structures_extxyz(fr)), "chemical/x-extxyz"


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


def show_environment(atoms, center: int, cutoff: float, *, structure_id=None, height: int = 420) -> bool:
    return show_html_viewer(
        lambda: viewer.environment_html(atoms, center, cutoff, structure_id=structure_id, height=height), height)


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


def needs(what: str, page: str, label: str, icon: str = ":material/arrow_forward:") -> None:
    """A friendly pointer to the page that provides a missing prerequisite."""
    st.info(what, icon=":material/info:")
    page_link(page, label, icon)


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
    scaling = "off" if h.density_scaling is None else f"{h.density_scaling:g} Å"
    radial = "off" if h.radial_scale is None else f"r₀ {h.radial_scale:g} Å, m {h.radial_exponent:g}"
    st.markdown(
        f"**Hypers** · ν_max {h.nu_max} · λ_max {h.lambda_max}  \n"
        f"cutoff {h.cutoff:g} Å (width {h.cutoff_width:g} Å)  \n"
        f"σ {h.density_width:g} Å · scaling {scaling} · radial weight {radial} · "
        f"element coupling {h.species_coupling:g} · hydrogen weight {h.hydrogen_weight:g} "
        f"(centres {h.hydrogen_center_weight:g}) · {h.normalization}"
    )
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
