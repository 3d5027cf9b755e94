"""Session state: the defaults of every persistent widget, their persistence across page switches
(:data:`KEEP`, :func:`init_state`), and the session's current selections: data set, target, split,
hyperparameters and the kernel that goes with them.

State lives in ``st.session_state`` under ``"wk.*"`` keys (never widgets), so results survive page switches;
widget keys are namespaced ``"<page>.<name>"``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import streamlit as st

from wkviz import Hypers
from wkviz.hypers import HYPER_SPECS
from wkviz.presets import DEFAULT_PRESET, choose_preset, get_preset
from wkviz import cache
from wkviz.errors import WkvizError
from wkviz.views import figures

from .datasets import Dataset, bundled_dataset, default_target, target_infos, _covered_split, _split, _target_values


DEFAULT_SAMPLE = "qm9"

DEFAULT_N = {"qm9": 300, "gold": 200, "teaching": 10_000}

MEMORY_BUDGET = 2 * 2**30


def _hyper_widget_values(hypers: Hypers | None = None) -> dict:
    """``kernels.<name>`` for every hyperparameter on the Kernels form (the fields with widget hints in
    :data:`wkviz.hypers.HYPER_SPECS`), plus the on/off checkbox of each optional one, from ``hypers`` (default:
    the :class:`~wkviz.Hypers` defaults)."""
    out = {}
    for spec in HYPER_SPECS:
        if not spec.widget:
            continue
        value = spec.default if hypers is None else getattr(hypers, spec.name)
        if spec.allows_none:
            out[spec.widget["toggle"]] = value is not None
            value = spec.widget["value_when_off"] if value is None else value
        out[f"kernels.{spec.name}"] = value
    return out


# Defaults of every persistent widget. Widgets are created with key= only (no value=), so these are the single
# source of initial values and Streamlit never warns about a value set twice.


WIDGET_DEFAULTS = {
    "data.source": "Bundled data set",
    "data.sample": DEFAULT_SAMPLE,
    "data.n": DEFAULT_N[DEFAULT_SAMPLE],
    "data.qm9_n": 500,
    "data.qm9_seed": 0,
    "data.split": "random",
    "data.test_fraction": 0.2,
    "data.seed": 0,
    **_hyper_widget_values(),
    "kernels.preset": DEFAULT_PRESET,
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
    "curves.stored": True,  # the bundled QM9 subset with U0 is the default data; sync_stored_curve_default after
    "map.level": "structures",
    "map.nu": "mixed",
    "map.color": "target",
    "map.n_envs": 40,
    "map.which": "test set (predictions, errors, σ)",
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
# Current data set, target and split
# --------------------------------------------------------------------------------------------------------------
def dataset() -> Dataset:
    """The session's data set; the bundled QM9 subset until the user chooses another."""
    ss = st.session_state
    if "wk.dataset" not in ss:
        ss["wk.dataset"] = bundled_dataset(DEFAULT_SAMPLE, ss.get("data.n", DEFAULT_N[DEFAULT_SAMPLE]))
        name, reason = choose_preset(ss["wk.dataset"].frames)
        if name == DEFAULT_PRESET:  # the form starts at the defaults, which are this preset's values
            ss["wk.preset"] = ss["wk.applied_preset"] = (name, f"chosen from the data: {reason}")
    return ss["wk.dataset"]


# --------------------------------------------------------------------------------------------------------------
# Hyperparameter presets (wkviz.presets): chosen from each new data set, overridable on the Kernels page
# --------------------------------------------------------------------------------------------------------------
def fill_preset(name: str, reason: str) -> None:
    """Put preset ``name``'s values into the Kernels form's widgets and remember why it was chosen.

    Call it where the form is not drawn yet in this run (a data-set change, or the preset selector's
    ``on_change``); the form's fields stay editable afterwards, and an edit made after choosing a preset is kept.
    """
    ss = st.session_state
    ss.update(_hyper_widget_values(get_preset(name).hypers()))
    ss["kernels.preset"] = name
    ss["wk.preset"] = (name, reason)


def on_preset_change() -> None:
    """``on_change`` of the Kernels page's preset selector."""
    fill_preset(st.session_state["kernels.preset"], "chosen on the Kernels page")


def applied_preset() -> tuple[str, str]:
    """(name, why) of the preset the applied hyperparameters started from."""
    return st.session_state.get("wk.applied_preset", (DEFAULT_PRESET, "the default"))


def set_dataset(ds: Dataset) -> None:
    """Switch data set; results keyed by content stay cached, the session's current selections are reset."""
    ss = st.session_state
    old = ss.get("wk.dataset")
    ss["wk.dataset"] = ds
    if old is None or old.digest != ds.digest:
        for key in ("wk.fit", "wk.lc", "wk.selected", "wk.map_selected.structures",
                    "wk.map_selected.atomic environments", "wk.map_job"):
            ss.pop(key, None)
        # a new data set starts from the preset its elements and cells call for (wkviz.presets.choose_preset); when
        # the data call for the same preset as before (more or fewer of the same molecules), the form keeps the
        # user's choice and edits
        with contextlib.suppress(WkvizError, ValueError):
            name, reason = choose_preset(ds.frames)
            if name != ss.get("wk.auto_preset", DEFAULT_PRESET):
                ss["wk.auto_preset"] = name
                fill_preset(name, f"chosen from the data: {reason}")
                ss["wk.hypers"] = hypers_from_widgets()
                ss["wk.applied_preset"] = ss["wk.preset"]
        targets = target_infos(ds)
        keys = [t.key for t in targets]
        if ss.get("data.target") not in keys:
            ss["data.target"] = default_target(targets)


def _unit_key(ds: Dataset, key: str) -> str:
    return f"data.unit.{ds.digest[:8]}.{key}"


def unit_label(ds: Dataset, info) -> str:
    """The unit as the Data page's table shows it: typed by the user, or assumed from the name for an uploaded
    file (which declares none), or the bundled set's documented one."""
    typed = (st.session_state.get(_unit_key(ds, info.key)) or "").strip()
    if typed:
        return f"{typed} (set by you)"
    if ds.name == "upload":
        return f"{info.unit} (assumed)" if info.unit else "– (none declared)"
    return info.unit or "–"


def target_info():
    """The selected target's TargetInfo, or None when the data set has no learnable target; its unit is the one
    the user typed on the Data page, if any."""
    ds = dataset()
    targets = target_infos(ds)
    if not targets:
        return None
    ss = st.session_state
    keys = [t.key for t in targets]
    if ss.get("data.target") not in keys:
        ss["data.target"] = default_target(targets)
    info = next(t for t in targets if t.key == ss["data.target"])
    typed = (ss.get(_unit_key(ds, info.key)) or "").strip()
    return dataclasses.replace(info, unit=typed) if typed else info


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


def sync_stored_curve_default(ds: Dataset, info, reference) -> None:
    """Tick "Show the stored QM9 curve" for QM9 data with a target the stored curve compares with (a total energy
    in eV, :meth:`wkviz.evaluation.stored.StoredCurve.comparable_to`), untick it otherwise.

    Decided again only when the data set's kind, the target or its unit changes, so the user's own tick stays while
    they stay. Call before the checkbox is created (Learning curves page)."""
    ss = st.session_state
    key = (ds.name, None if info is None else (info.key, info.unit))
    if reference is None or ss.get("wk.stored_default_for") == key:
        return
    ss["curves.stored"] = bool(ds.name in ("qm9", "qm9pack") and info is not None and reference.comparable_to(
        info.key, info.unit, kind=info.kind, extensive=info.extensive))
    ss["wk.stored_default_for"] = key


def target_values(key: str | None = None) -> np.ndarray:
    ds = dataset()
    key = key or st.session_state.get("data.target")
    return _target_values(ds.digest, key, ds.frames)


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


def moved_to_train() -> list[int]:
    """Test structures that :func:`split` moved to training because of elements unseen in training."""
    ds = dataset()
    train, test = _raw_split()
    return sorted(int(i) for i in _covered_split(ds.digest, train, test, ds.frames)[2])


# --------------------------------------------------------------------------------------------------------------
# Current hyperparameters and kernel
# --------------------------------------------------------------------------------------------------------------
def hypers_from_widgets() -> Hypers:
    """Hypers from the Kernels form's widgets (raises ValueError with a clear message when invalid).

    A hyperparameter without a widget (``schedule``, ``nu1_route``) keeps its default; an optional one is None
    while its checkbox is off.
    """
    ss = st.session_state
    values = {}
    for spec in HYPER_SPECS:
        if not spec.widget:
            continue
        if spec.allows_none and not ss[spec.widget["toggle"]]:
            values[spec.name] = None
        else:
            values[spec.name] = spec.type(ss[f"kernels.{spec.name}"])
    return Hypers(**values)


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
