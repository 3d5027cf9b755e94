"""chemiscope's Streamlit component, served offline, with the app's shared structure selection.

The component is chemiscope 1.1's own (its JavaScript bundle, from the installed package), declared here from
the directory :func:`wkviz.views.explorer.component_dir` prepares, because the page chemiscope ships with it loads
jQuery, pako and Bootstrap from CDNs (the bundle needs none of them; offline they fail). The selection is
``st.session_state["wk.selected"]`` (a structure index), the same one the Models page's parity plot sets: a click
in chemiscope sets it, and a change elsewhere is passed in as ``selected_index``.
"""

from __future__ import annotations

import hashlib
import json

import streamlit as st

from wkviz.views import explorer

SELECTED = "wk.selected"

_COMPONENT = None


def _component():
    global _COMPONENT
    if _COMPONENT is None:
        import streamlit.components.v1 as components

        _COMPONENT = components.declare_component("chemiscope_viewer", path=str(explorer.component_dir()))
    return _COMPONENT


def dataset_key(dataset: dict) -> str:
    """A short content hash: the component keeps its first dataset, so a new dataset needs a new key."""
    return hashlib.sha1(json.dumps(dataset, sort_keys=True).encode()).hexdigest()[:12]


def viewer(dataset: dict, *, settings: dict, key: str, mode: str = "default", height: int = 620,
           structure_ids=None) -> bool:
    """Draw chemiscope (map + structure, or ``mode="structure"``) and keep its selection in ``wk.selected``.

    ``structure_ids[k]`` is the data set index of the dataset's structure ``k`` (default: the same).

    ``settings`` (the page's widgets) go into the dataset, so a change of them is a new dataset and a new
    viewer; settings changed in chemiscope's own menus stay until then (the component is never sent settings
    back: echoing its own axis ranges makes it warn and flip axes). Returns False (with a message) when
    chemiscope is missing.
    """
    ok, why = explorer.component_available()
    if not ok:
        st.warning(why, icon=":material/scatter_plot:")
        return False
    ss = st.session_state
    dataset = dict(dataset, settings=settings)
    key = f"{key}.{dataset_key(dataset)}"
    n = len(dataset.get("structures", ()))
    ids = list(range(n)) if structure_ids is None else [int(i) for i in structure_ids]
    row_of = {sid: k for k, sid in enumerate(ids)}
    selected = row_of.get(int(ss[SELECTED])) if ss.get(SELECTED) is not None else None

    def on_change():
        value = ss.get(key)
        if not value:
            return
        picked = value.get("selected_id")
        if picked is not None and 0 <= int(picked) < n and ids[int(picked)] != ss.get(SELECTED):
            ss[SELECTED] = ids[int(picked)]

    _component()(dataset=dataset, settings={}, mode=mode, no_info_panel=False, key=key,
                 width="stretch", height=height, selected_index=selected, default=None, on_change=on_change)
    return True
