"""The data sets the app works on: :class:`Dataset` (structures with their content digest), the loaders of the
bundled sets, an upload and a QM9 draw, and the cached wkviz calls on a data set (targets, splits, summary).

Results are cached by content digest (``st.cache_data`` / ``st.cache_resource``), so navigating never re-reads or
recomputes. Nothing here reads the session; :mod:`pages.support.state` holds which data set is the current one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from wkviz import cache
from wkviz.files import display_name


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
    return Dataset("upload", f"{display_name(filename)} ({len(frames)} structures)", frames,
                   cache.hash_structures(frames), stem)


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


@st.cache_data(show_spinner=False, max_entries=16)
def _target_infos(digest: str, _frames):
    from wkviz import data

    return data.describe_targets(_frames)


def target_infos(ds: Dataset):
    """The targets found in ``ds`` (:func:`wkviz.data.describe_targets`), cached by content."""
    return _target_infos(ds.digest, ds.frames)


def default_target(targets) -> str | None:
    keys = [t.key for t in targets]
    for preferred in ("U0", "energy", "gap"):
        if preferred in keys:
            return preferred
    scalars = [t.key for t in targets if t.kind == "scalar"]
    return scalars[0] if scalars else (keys[0] if keys else None)


@st.cache_data(show_spinner=False, max_entries=32)
def _target_values(digest: str, key: str, _frames):
    from wkviz import data

    return data.get_target(_frames, key)


@st.cache_data(show_spinner=False, max_entries=32)
def _split(digest: str, n: int, method: str, test_fraction: float, seed: int, kernel_key: str | None, _K=None):
    from wkviz import data

    if method == "fps" and _K is not None:
        n_train = n - max(1, int(round(test_fraction * n)))
        return data.fps_split(_K, n_train, seed=seed)
    return data.random_split(n, float(test_fraction), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _covered_split(digest: str, train, test, _frames):
    from wkviz import data

    return data.cover_elements(_frames, train, test)


@st.cache_data(show_spinner=False, max_entries=16)
def _summary(digest: str, _frames):
    from wkviz import data

    return data.summarize(_frames)


def summary(ds: Dataset) -> dict:
    """Counts, elements and sizes of ``ds`` (:func:`wkviz.data.summarize`), cached by content."""
    return _summary(ds.digest, ds.frames)


def formulas(ds: Dataset) -> list[str]:
    """The chemical formula of every structure of ``ds``, cached by content."""
    return _formulas(ds.digest, ds.frames)


@st.cache_data(show_spinner=False, max_entries=16)
def _formulas(digest: str, _frames):
    return [a.get_chemical_formula() for a in _frames]
