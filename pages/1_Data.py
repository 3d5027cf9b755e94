"""Data: choose a bundled set, upload a file or draw from QM9; pick the target and the split; explore the structures
(chemiscope: target per atom against size, any property on any axis, 3D)."""

import contextlib

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import datasets, explorer as explorer_widget, nav, state, widgets
from wkviz import data
from wkviz.errors import WkvizError
from wkviz.files import display_name
from wkviz.views import explorer, figures


def _explorer_dataset(ds, targets):
    """chemiscope dataset of the data set: size, composition and every per-structure target (and per atom when
    extensive); map of the target per atom against size, before any kernel."""
    n_atoms = np.array([len(a) for a in ds.frames])
    props = explorer.composition_properties(ds.frames)
    first = None
    for t in targets:
        if t.kind == "atomic":
            continue
        with contextlib.suppress(WkvizError, ValueError):
            props.update(explorer.target_properties(t.key, state.target_values(t.key), unit=t.unit or "",
                                                    n_atoms=n_atoms, extensive=t.extensive))
            first = first or t.key
    info = state.target_info()
    key = info.key if info is not None and info.kind != "atomic" else first
    colour = explorer.default_color(props, key)
    y = colour if colour != "number of atoms" else "structure"
    view = explorer.settings(x="number of atoms", y=y, color=colour)
    return explorer.dataset(ds.frames, props, name=ds.title), view


@st.cache_data(show_spinner="Preparing the explorer…", max_entries=4)
def _explorer_cached(digest: str, target_key, _ds, _targets):
    """The explorer's dataset, built once per data set and target (a 10,000-structure set takes seconds)."""
    return _explorer_dataset(_ds, _targets)


def render() -> None:
    ss = st.session_state
    widgets.page_header("Data", "Structures to learn from, what can be learned, and how they are split.")

    SOURCES = ["Bundled data set", "Upload a file", "Full QM9 (qm9pack)"]
    MAX_MB = data.DEFAULT_MAX_BYTES / 2**20


    def _on_sample_change():
        ss["data.n"] = state.DEFAULT_N.get(ss["data.sample"], 200)


    src_col, opt_col = st.columns([1, 2], gap="large")
    with src_col:
        st.radio("Source", SOURCES, key="data.source", **state.KEEP,
                 help="Bundled sets ship with wkviz; uploads accept any file ase can read (extxyz, xyz, cif, POSCAR, "
                      "PDB, … also .gz).")

    with opt_col:
        source = ss["data.source"]
        if source == SOURCES[0]:
            c1, c2 = st.columns([2, 1])
            with c1:
                st.selectbox("Bundled set", list(data.SAMPLE_SETS), key="data.sample", **state.KEEP, on_change=_on_sample_change,
                             format_func=lambda k: data.SAMPLE_SETS[k]["title"])
            with widgets.user_errors("Could not load the bundled set"):
                full = datasets._sample(ss["data.sample"])
                with c2:
                    ss["data.n"] = int(min(max(int(ss["data.n"]), 2), len(full)))
                    st.number_input("Structures to use (count)", min_value=2, max_value=len(full), step=50,
                                    key="data.n", **state.KEEP, help="The first N structures of the file (the QM9 subset is "
                                                       "already a random draw). Kernel cost grows as N².")
                st.caption(data.SAMPLE_SETS[ss["data.sample"]]["description"])
                state.set_dataset(datasets.bundled_dataset(ss["data.sample"], ss["data.n"]))
        elif source == SOURCES[1]:
            upload = st.file_uploader(
                f"Structure file (at most {MAX_MB:.0f} MB, also after decompression)",
                key="data.upload",
                help="Energies, forces and stresses that ase reads into a calculator count as targets too.",
            )
            if upload is not None:
                shown = display_name(upload.name)
                with widgets.user_errors(f"Could not use {shown}"):
                    state.set_dataset(datasets.upload_dataset(upload.name, upload.getvalue()))
                    st.success(f"Loaded {state.dataset().n} structures from {shown}.", icon=":material/check:")
            else:
                st.caption("Until you upload a file, the pages keep using the current data set.")
        else:
            if not datasets.qm9pack_available():
                st.warning("Full QM9 (130,831 molecules) needs the optional `qm9pack` package (about 230 MB): "
                           "`.venv/bin/python -m pip install qm9pack` (or `make test`, which installs it with the "
                           "test references), then reload this page. The bundled 2,000-molecule subset works "
                           "without it.", icon=":material/extension:")
            else:
                c1, c2, c3 = st.columns([1, 1, 1])
                with c1:
                    st.number_input("Molecules (count)", min_value=2, max_value=130_831, step=100, key="data.qm9_n", **state.KEEP)
                with c2:
                    st.number_input("Seed", min_value=0, step=1, key="data.qm9_seed", **state.KEEP)
                with c3:
                    st.write("")
                    go = st.button("Draw molecules", key="data.qm9.btn", type="primary", width="stretch")
                if go:
                    with widgets.user_errors("Could not draw from QM9"):
                        state.set_dataset(datasets.qm9_dataset(ss["data.qm9_n"], ss["data.qm9_seed"]))

    ds = state.dataset()
    st.divider()

    # ---- summary -----------------------------------------------------------------------------------------------
    summary = datasets.summary(ds)
    m = st.columns(5)
    m[0].metric("Structures", f"{summary['n_structures']:,}")
    m[1].metric("Atoms", f"{summary['n_atoms_total']:,}")
    aps = summary["atoms_per_structure"]
    m[2].metric("Atoms per structure", f"{aps['min']}–{aps['max']}", help=f"mean {aps['mean']:.1f}, median {aps['median']:g}")
    m[3].metric("Elements", " ".join(summary["elements"]))
    m[4].metric("Periodic", f"{summary['n_periodic']} / {summary['n_structures']}")

    # ---- target and split --------------------------------------------------------------------------------------
    targets = datasets.target_infos(ds)
    t_col, s_col = st.columns([1.3, 1], gap="large")
    with t_col:
        st.subheader("What can be learned")
        if not targets:
            st.warning("No learnable target in this data set (no numeric per-structure or per-atom values). You can "
                       "still compute kernels and maps.", icon=":material/warning:")
        else:
            info = state.target_info()
            kinds = {"scalar": "scalar (λ=0)", "vector": "vector (λ=1)", "tensor": "3×3 tensor (λ=0 ⊕ λ=2)",
                     "atomic": "per-atom scalar"}
            st.selectbox("Target", [t.key for t in targets], key="data.target", **state.KEEP,
                         format_func=lambda k: next(f"{t.key} · {kinds[t.kind]}" + (f" · {t.unit}" if t.unit else "")
                                                    for t in targets if t.key == k))
            if ds.name == "upload" and info is not None:
                # an extended-XYZ file declares no units: the one shown comes from the key's name
                st.text_input(f"Unit of {info.key}", key=f"data.unit.{ds.digest[:8]}.{info.key}", **state.KEEP,
                              placeholder=info.unit or "no unit",
                              help="The file does not declare units; wkviz assumes one from the key's name "
                                   "(energy → eV). Type the right one (e.g. kcal/mol) to label every page with it; "
                                   "values are not converted.")
    with s_col:
        st.subheader("Split")
        st.radio("Method", ["random", "fps"], key="data.split", **state.KEEP, horizontal=True,
                 format_func=lambda s: "random" if s == "random" else "farthest-point sampling (on ν=2 kernel)",
                 help="FPS picks a training set spread over the data (needs kernels; random until they exist).")
        st.slider("Test fraction", min_value=0.05, max_value=0.5, step=0.05, key="data.test_fraction", **state.KEEP,
                  help="Structures held out until the final test; model selection never sees them.")
        st.number_input("Seed", min_value=0, step=1, key="data.seed", **state.KEEP)
        with widgets.user_errors():
            train, test = state.split()
            st.markdown(f"**{len(train)}** training structures, **{len(test)}** test structures.")
            moved = state.moved_to_train()
            if moved:
                st.caption(f"Moved to training: structure{'s' if len(moved) > 1 else ''} {', '.join(map(str, moved))}, "
                           f"which contain{'' if len(moved) > 1 else 's'} an element no training structure has (a "
                           "model cannot predict an element it never saw).")
            if ss.get("data.split") == "fps" and state.current_kernel()[0] is None:
                st.caption("FPS needs kernels: using a random split until they are computed.")

    if targets:
        st.markdown("**Targets in this data set**")
        rows = []
        for t in targets:
            st_ = summary["targets"].get(t.key, {})
            rows.append({"key": t.key, "kind": kinds[t.kind], "unit": state.unit_label(ds, t),
                         "extensive": "yes" if t.extensive else "no", "valid": t.n_valid,
                         "mean": st_.get("mean"), "std": st_.get("std"), "min": st_.get("min"), "max": st_.get("max")})
        table = pd.DataFrame(rows)
        st.dataframe(table, hide_index=True, height=min(36 * (len(rows) + 1) + 4, 640), width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.4g") for c in ("mean", "std", "min", "max")})
        st.caption("Vectors and tensors: statistics of the norm. Extensive targets are fitted with sum kernels, "
                   "intensive ones with mean kernels.")

    # ---- distributions -----------------------------------------------------------------------------------------
    st.divider()
    h1, h2 = st.columns(2, gap="large")
    sizes = np.array([len(a) for a in ds.frames])
    with h1:
        fig = figures.histogram(sizes, label="atoms per structure", unit="count", title="Structure sizes", integer=True)
        widgets.chart(fig, "data.sizes.chart")
        widgets.downloads(fig, name="structure_sizes", key="data.sizes",
                         table=pd.DataFrame({"structure": np.arange(ds.n), "n_atoms": sizes}))
    with h2:
        info = state.target_info()
        if info is not None:
            with widgets.user_errors():
                y = state.target_values(info.key)
                if info.kind == "atomic":
                    values, lab = y, f"{info.key} per atom"
                elif info.kind == "scalar":
                    values, lab = y, info.key
                else:
                    values, lab = np.linalg.norm(y.reshape(len(y), -1), axis=1), f"|{info.key}|"
                fig = figures.histogram(values, label=lab, unit=info.unit or None, title=f"Target: {info.key}")
                widgets.chart(fig, "data.target.chart")
                widgets.downloads(fig, name=f"target_{info.key}", key="data.target",
                                 table=pd.DataFrame({"value": np.asarray(values).ravel()}))

    # ---- explore the structures (chemiscope) ----------------------------------------------------------------------
    st.divider()
    st.subheader("Explore the structures")
    formulas = datasets.formulas(ds)
    with widgets.user_errors("Cannot show the explorer"):
        info = state.target_info()
        explorable, view = _explorer_cached(ds.digest, info.key if info is not None else None, ds, targets)
        explorer_widget.viewer(explorable, settings=view, key="data.chemiscope", height=560)
    sel = ss.get(explorer_widget.SELECTED)
    i = int(sel) if sel is not None and 0 <= int(sel) < ds.n else 0
    atoms = ds.frames[i]
    st.markdown(f"**Selected: structure {i} · {formulas[i]}** · {len(atoms)} atoms"
                + (" · periodic" if atoms.pbc.any() else "")
                + " — click a point (or type an index in the viewer's box) to select another; the Map and Models "
                  "pages select the same structure.")
    rows = []
    for t in targets:
        with widgets.user_errors():
            v = state.target_values(t.key)
            if t.kind == "atomic":
                continue
            val = v[i]
            rows.append({"target": t.key, "value": np.array2string(np.asarray(val), precision=4, suppress_small=True)
                         if np.ndim(val) else f"{float(val):.6g}", "unit": t.unit or "–"})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)

    name, payload, mime = widgets.dataset_file(ds)
    st.download_button(f"Download these {ds.n} structures ({name})", data=payload, file_name=name, mime=mime,
                       key="data.extxyz.dl", icon=":material/download:", on_click="ignore")


nav.run_page(render, "Data")
