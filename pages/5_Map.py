"""Map: kernel PCA of structures or atomic environments, coloured by target / prediction / error / uncertainty /
element, for any body order; selecting points shows them in 3D."""

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import datasets, jobs, nav, state, widgets
from wkviz.cli.reproduce import cli_command
from wkviz import cache
from wkviz.views import export, figures


@st.cache_data(show_spinner="Kernel PCA…", max_entries=32)
def _project(key: str, nu, weights_key: str, _K, _weights):
    from wkviz.evaluation import projection

    return projection.project(_K, nu, weights=_weights, n_components=2)


def render() -> None:
    ss = st.session_state
    widgets.page_header("Map", "Kernel PCA: structures (or atomic environments) that a kernel finds similar sit close "
                              "together. Switch ν to see what each body order separates.")

    ds = state.dataset()
    info = state.target_info()
    kres, kkey = state.current_kernel()
    hypers = state.applied_hypers()


    def fitted_weights(nu_max: int):
        fit = ss.get("wk.fit")
        if fit is None or fit.get("kernel_key") != kkey or not fit.get("weights_fitted"):
            return None
        w = np.zeros(nu_max + 1)
        for nu, v in fit["weights_fitted"].items():
            if int(nu) <= nu_max:
                w[int(nu)] = v
        return w if w.sum() > 0 else None


    def fit_columns():
        """Test predictions, errors and uncertainties of the session's fit, by structure id (structure targets)."""
        fit = ss.get("wk.fit")
        if fit is None or fit.get("dataset") != ds.digest or fit.get("kernel_key") != kkey:
            return None
        result = cache.RESULTS.get(fit["key"])
        if result is None or result["kind"] == "atomic" or "mixed" not in result["models"]:
            return None
        mixed = result["models"]["mixed"]
        test = fit["test"]
        y_true = np.asarray(result["y_true"]).reshape(len(test), -1)
        pred = np.asarray(mixed["pred"]).reshape(len(test), -1)
        out = {"test": test, "prediction": np.linalg.norm(pred, axis=1) if pred.shape[1] > 1 else pred[:, 0],
               "error": np.abs(pred - y_true).max(axis=1)}
        if mixed["std"] is not None:
            out["uncertainty"] = np.asarray(mixed["std"]).reshape(len(test), -1).max(axis=1)
        return out


    def env_kernels(n_struct: int):
        """Atom-level kernels of the first ``n_struct`` structures: sliced from the main result when it has them,
        else computed (in a background job) and stored by content."""
        from wkviz.engine.kernels import WignerKernel

        frames = ds.frames[:n_struct]
        n_atoms = sum(len(a) for a in frames)
        if kres.K_atomic is not None:
            return kres.K_atomic[:, :n_atoms, :n_atoms], None
        sub_digest = cache.hash_structures(frames)
        key = "atomic:" + cache.hash_key(sub_digest, hypers)
        res = cache.RESULTS.get(key)
        if res is not None:
            return res.K_atomic, None
        job = ss.get("wk.map_job")
        if job is None or job.key != key or (job.done and job.state().status != "done"):
            if not st.button(f"Compute atom-level kernels for {n_atoms} environments", key="map.envs.btn",
                             type="primary", icon=":material/play_arrow:"):
                if job is not None and job.key == key and job.state().status == "failed":
                    widgets.show_job_failure(job)
                return None, None
            engine = WignerKernel(hypers, memory_budget=state.MEMORY_BUDGET)

            def work(progress, cancel):
                return engine.compute(frames, atomic=True, progress=progress, cancel=cancel)

            job = cache.BackgroundJob(work, label=f"atom-level kernels for {n_atoms} environments", key=key).start()
            ss["wk.map_job"] = job
        return None, job


    def show_map(coords, ids, explained, color, color_label, color_unit, categorical, hover, title, level, frame_of,
                 atom_of, K_label):
        sel_key = f"wk.map_selected.{level}"
        sel = ss.get(sel_key)
        fig = figures.kpca_map(coords, ids=ids, color=color, color_label=color_label, color_unit=color_unit,
                               categorical=categorical, hover=hover, explained=explained, title=title,
                               selected=[sel] if sel is not None else ())
        left, right = st.columns([1.35, 1], gap="large")
        with left:
            selection = widgets.chart(fig, "map.scatter.chart", on_select="rerun",
                                    selection_mode=("points", "box", "lasso"))
            picked = widgets.selected_ids(selection)
            if picked and picked[0] != sel:
                ss[sel_key] = picked[0]
                st.rerun()
            st.caption("Click a point (or lasso several) to see it in 3D. Axes: first two kernel principal components "
                       "of the cosine-normalised, centred kernel.")
        with right:
            if sel is None or sel not in set(int(i) for i in ids):
                st.info("Select a point on the map to show it here.", icon=":material/touch_app:")
            else:
                s = frame_of(sel)
                if level == "structures":
                    widgets.show_structure(ds.frames[s], structure_id=s, height=430)
                else:
                    widgets.show_environment(ds.frames[s], atom_of(sel), hypers.cutoff, structure_id=s, height=430)
                if picked and len(picked) > 1:
                    st.caption(f"{len(picked)} points selected; showing the first. Selected ids: "
                               f"{', '.join(map(str, picked[:20]))}{' …' if len(picked) > 20 else ''}")
        table = pd.DataFrame({"id": ids, "structure": [frame_of(int(i)) for i in ids], "pc1": coords[:, 0],
                              "pc2": coords[:, 1] if coords.shape[1] > 1 else 0.0})
        if level != "structures":
            table["atom"] = [atom_of(int(i)) for i in ids]
        if color is not None:
            table[color_label or "colour"] = color
        props = {"PC1": {"target": "structure" if level == "structures" else "atom", "values": table["pc1"].to_numpy(),
                         "description": f"kernel PCA component 1 ({K_label})"},
                 "PC2": {"target": "structure" if level == "structures" else "atom", "values": table["pc2"].to_numpy(),
                         "description": f"kernel PCA component 2 ({K_label})"}}
        if color is not None:
            props[color_label or "colour"] = {"target": props["PC1"]["target"], "values": np.asarray(color),
                                              "units": color_unit or ""}
        if level == "structures":
            frames = [ds.frames[int(i)] for i in ids]
            envs = None
        else:
            n_struct = max(frame_of(int(i)) for i in ids) + 1
            frames = ds.frames[:n_struct]
            envs = [(frame_of(int(i)), atom_of(int(i))) for i in ids]
        chemiscope = (lambda: export.chemiscope_json(frames, props, name=f"wkviz map: {ds.title} ({K_label})",
                                                      description=f"Kernel PCA of Wigner kernels, hypers "
                                                                  f"{hypers.to_json()}",
                                                      environments=envs, cutoff=hypers.cutoff, x="PC1", y="PC2",
                                                      color=(color_label or "colour") if color is not None else None))
        widgets.downloads(fig, name="kpca_map", key="map.scatter", table=table,
                         extra={"chemiscope": ("map.chemiscope.json", chemiscope, "application/json")})
        fname, payload, mime = widgets.dataset_file(ds)
        widgets.reproduce([cli_command("kernels", hypers, fname, atomic=level != "structures" or None,
                                       out="K.npz")],
                         {"data": {"file": fname, "digest": ds.digest}, "hypers": hypers,
                          "map": {"level": level, "kernel": K_label, "colour": color_label,
                                  "explained_variance": [float(e) for e in explained]}},
                         key="map", files={"structures": (fname, payload, mime)})
        st.caption("The map is the kernel PCA (wkviz.evaluation.projection.project) of the kernel in K.npz; open the chemiscope "
                   "file at chemiscope.org or with chemiscope.show for a linked map and 3D viewer.")


    if kres is None:
        nav.needs("The map needs the kernels of this data set.", nav.KERNELS, "Compute the kernels")
    else:
        nu_max = kres.K.shape[0] - 1
        c1, c2, c3, c4 = st.columns([1.1, 1.6, 1.3, 1], gap="medium")
        with c1:
            st.radio("Points", ["structures", "atomic environments"], key="map.level", **state.KEEP)
        with c2:
            options = ["mixed"] + list(range(nu_max + 1))
            if ss["map.nu"] not in options:
                ss["map.nu"] = "mixed"
            st.radio("Kernel", options, key="map.nu", **state.KEEP, horizontal=True,
                     format_func=lambda v: "mixed" if v == "mixed" else figures.body_order_label(v, short=True))
        level = ss["map.level"]
        fitcols = fit_columns() if level == "structures" else None
        if level == "structures":
            colours = ["target", "number of atoms", "elements present", "train / test"]
            if fitcols is not None:
                colours[1:1] = ["prediction", "error"] + (["uncertainty"] if "uncertainty" in fitcols else [])
        else:
            colours = ["element", "structure"] + (["target"] if info is not None and info.kind == "atomic" else [])
        if ss["map.color"] not in colours:
            ss["map.color"] = colours[0]
        with c3:
            st.selectbox("Colour by", colours, key="map.color", **state.KEEP)
        with c4:
            if level != "structures":
                ss["map.n_envs"] = int(min(max(int(ss["map.n_envs"]), 1), ds.n))
                st.number_input("Structures (count)", min_value=1, max_value=ds.n, step=10, key="map.n_envs", **state.KEEP,
                                help="Environments of the first N structures (atom-level kernels grow as atoms²).")
        nu = ss["map.nu"]
        weights = fitted_weights(nu_max)
        label = ("mixed kernel" + (" (fitted weights)" if weights is not None else " (equal weights on ν ≥ 1)")
                 if nu == "mixed" else figures.body_order_label(nu))
        colour = ss["map.color"]
        formulas = datasets.formulas(ds)
        if level == "structures":
            with widgets.user_errors("Cannot build the map"):
                proj = _project(kkey, nu, str(None if weights is None else weights.tolist()), kres.K, weights)
                ids = np.arange(ds.n)
                coords = proj.coords
                color, clabel, cunit, categorical = None, colour, None, False
                if colour == "target" and info is not None and info.kind != "atomic":
                    y = state.target_values(info.key)
                    color = y if y.ndim == 1 else np.linalg.norm(y.reshape(len(y), -1), axis=1)
                    clabel, cunit = (info.key if y.ndim == 1 else f"|{info.key}|"), info.unit or None
                elif colour in ("prediction", "error", "uncertainty"):
                    ids = fitcols["test"]
                    coords = coords[ids]
                    color = fitcols[colour]
                    clabel, cunit = f"{colour} ({info.key})", info.unit or None
                elif colour == "number of atoms":
                    color, cunit = np.array([len(a) for a in ds.frames]), "count"
                elif colour == "elements present":
                    color, categorical = [",".join(sorted(set(a.get_chemical_symbols()))) for a in ds.frames], True
                elif colour == "train / test":
                    train, test = state.split()
                    lab = np.array(["train"] * ds.n, dtype=object)
                    lab[test] = "test"
                    color, categorical = lab, True
                title = f"Kernel PCA of {ds.n} structures, {label}"
                if colour in ("prediction", "error", "uncertainty"):
                    title += " (test structures)"
                show_map(coords, ids, proj.explained_variance_ratio, color, clabel, cunit, categorical,
                         [formulas[int(i)] for i in ids], title, level, lambda i: int(i), lambda i: -1, label)
        else:
            n_struct = int(ss["map.n_envs"])
            K_atomic, job = env_kernels(n_struct)
            if job is not None and not job.done:
                jobs.poll_job(job, cancel_key="map.cancel.btn", what=job.label)
            if K_atomic is not None:
                frames = ds.frames[:n_struct]
                struct_of = np.repeat(np.arange(n_struct), [len(a) for a in frames])
                atom_of = np.concatenate([np.arange(len(a)) for a in frames])
                symbols = np.concatenate([a.get_chemical_symbols() for a in frames])
                with widgets.user_errors("Cannot build the map"):
                    akey = "envmap:" + cache.hash_key(cache.hash_structures(frames), hypers)
                    proj = _project(akey, nu, str(None if weights is None else weights.tolist()), K_atomic, weights)
                    ids = np.arange(len(struct_of))
                    color, clabel, cunit, categorical = symbols, "element", None, True
                    if colour == "structure":
                        color, clabel, cunit, categorical = struct_of, "structure index", "#", False
                    elif colour == "target":
                        color = state.target_values(info.key)[: len(struct_of)]
                        clabel, cunit, categorical = info.key, info.unit or None, False
                    hover = [f"{formulas[s]}, atom {a} ({el})" for s, a, el in zip(struct_of, atom_of, symbols)]
                    show_map(proj.coords, ids, proj.explained_variance_ratio, color, clabel, cunit, categorical, hover,
                             f"Kernel PCA of {len(ids)} atomic environments ({n_struct} structures), {label}", level,
                             lambda i: int(struct_of[i]), lambda i: int(atom_of[i]), label)


nav.run_page(render, "Map")
