"""Map: chemiscope on the session's data, structures or atomic environments. Every body order's and the mixed
kernel's first kernel principal components, the target, each fitted model's prediction, error and uncertainty,
composition and size are properties for any axis, colour or size; a click selects the structure for the whole
app (the Models page's parity plot selects it here)."""

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import datasets, explorer as explorer_widget, jobs, nav, state, widgets
from wkviz.cli.reproduce import cli_command
from wkviz import cache
from wkviz.views import explorer, figures


@st.cache_data(show_spinner="Kernel PCA of every body order…", max_entries=16)
def _projections(key: str, weights_key: str, _K, _weights):
    from wkviz.evaluation import projection

    return projection.project_all(_K, weights=_weights, n_components=2)


def render() -> None:
    ss = st.session_state
    widgets.page_header("Map", "Structures (or atomic environments) that a kernel finds similar sit close "
                               "together. Choose the body order, colour by the target or a model's error, click "
                               "a point to see it in 3D.")

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

    def session_fit():
        """(test indices, result) of the session's fit on this data set and kernel, or None."""
        fit = ss.get("wk.fit")
        if fit is None or fit.get("dataset") != ds.digest or fit.get("kernel_key") != kkey:
            return None
        result = cache.RESULTS.get(fit["key"])
        return None if result is None else (np.asarray(fit["test"]), result)

    def env_kernels(n_struct: int):
        """Atom-level kernels of the first ``n_struct`` structures: sliced from the main result when it has them,
        else computed (in a background job) and stored by content."""
        from wkviz.engine.kernels import WignerKernel

        frames = ds.frames[:n_struct]
        n_atoms = sum(len(a) for a in frames)
        if kres.K_atomic is not None:
            return kres.K_atomic[:, :n_atoms, :n_atoms], None
        key = "atomic:" + cache.hash_key(cache.hash_structures(frames), hypers)
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

    def model_rows(result, test):
        """{label: {"pred", "std"}} of every model of the fit, and the true values, by test row."""
        models = {figures.model_label(name, short=True): {"pred": m["pred"], "std": m.get("std")}
                  for name, m in result["models"].items()}
        return models, np.asarray(result["y_true"])

    if kres is None:
        nav.needs("The map needs the kernels of this data set.", nav.KERNELS, "Compute the kernels")
        return
    nu_max = kres.K.shape[0] - 1
    c1, c2, c3, c4 = st.columns([1, 1.5, 1.6, 1], gap="small")
    with c1:
        st.radio("Points", ["structures", "atomic environments"], key="map.level", **state.KEEP)
    with c2:
        options = ["mixed"] + list(range(nu_max + 1))
        if ss["map.nu"] not in options:
            ss["map.nu"] = "mixed"
        st.radio("Kernel (map axes)", options, key="map.nu", **state.KEEP, horizontal=True,
                 format_func=lambda v: "mixed" if v == "mixed" else figures.body_order_label(v, short=True),
                 help="The axes are the first two kernel principal components of this kernel; every body order's "
                      "are also in chemiscope's axis menus.")
    level = ss["map.level"]
    with c4:
        if level != "structures":
            ss["map.n_envs"] = int(min(max(int(ss["map.n_envs"]), 1), ds.n))
            st.number_input("Structures (count)", min_value=1, max_value=ds.n, step=10, key="map.n_envs",
                            **state.KEEP, help="Environments of the first N structures (atom-level kernels grow "
                                               "as atoms²).")
    weights = fitted_weights(nu_max)
    wkey = str(None if weights is None else weights.tolist())
    fitted = session_fit()
    target_key = info.key if info is not None else None
    unit = (info.unit or "") if info is not None else ""
    n_atoms = np.array([len(a) for a in ds.frames])
    shapes, shape_names, envs, atom_color, data = {}, [], None, None, None
    structure_ids, rows = None, None
    test_only = False
    if fitted is not None and (level == "structures" or fitted[1]["kind"] == "atomic"):
        with c3:
            st.radio("Show", ["test set (predictions, errors, σ)", "all structures"],
                     key="map.which", **state.KEEP,
                     help="Models predict the test structures only; chemiscope needs a value for every point.")
        test_only = ss["map.which"].startswith("test")

    with widgets.user_errors("Cannot build the map"):
        if level == "structures":
            frames = ds.frames
            projections = _projections(kkey, wkey, kres.K, weights)
            props = explorer.kpca_properties(projections)
            if info is not None and info.kind != "atomic":
                y = state.target_values(info.key)
                props.update(explorer.target_properties(info.key, y, unit=unit, n_atoms=n_atoms,
                                                        extensive=info.extensive))
                if info.kind == "vector":
                    scale = 2.5 / max(float(np.linalg.norm(y, axis=1).max()), 1e-12)
                    shapes[f"{info.key} (true)"] = explorer.arrows(y, "#333333", scale=scale)
            if test_only and fitted[1]["kind"] != "atomic":
                test, result = fitted
                models, y_true = model_rows(result, test)
                props.update(explorer.model_properties(ds.n, test, y_true, models, unit=unit))
                if result["kind"] == "vector" and "mixed" in result["models"]:
                    pred = np.zeros((ds.n, 3))
                    pred[test] = np.asarray(result["models"]["mixed"]["pred"]).reshape(len(test), 3)
                    shapes[f"{info.key} (predicted, test)"] = explorer.arrows(pred, "#c92a2a", scale=scale)
            props.update(explorer.composition_properties(frames))
            train, test_ids = state.split()
            split_lab = np.array(["train"] * ds.n, dtype=object)
            split_lab[test_ids] = "test"
            props["train / test"] = explorer.prop(split_lab, description="the session's split (Data page)")
            shape_names = list(shapes)
            title = f"{ds.n} structures"
            if test_only:
                rows = structure_ids = np.sort(fitted[0])
                frames = [ds.frames[i] for i in structure_ids]
                shapes = {k: dict(v, parameters=dict(v["parameters"], structure=[
                    v["parameters"]["structure"][i] for i in structure_ids])) for k, v in shapes.items()}
                title = f"{len(rows)} test structures of {ds.n}"
        else:
            n_struct = int(ss["map.n_envs"])
            K_atomic, job = env_kernels(n_struct)
            if job is not None and not job.done:
                jobs.poll_job(job, cancel_key="map.cancel.btn", what=job.label)
            if K_atomic is None:
                return
            frames = ds.frames[:n_struct]
            struct_of = np.repeat(np.arange(n_struct), n_atoms[:n_struct])
            atom_of = np.concatenate([np.arange(len(a)) for a in frames])
            envs = list(zip(struct_of.tolist(), atom_of.tolist()))
            akey = "envmap:" + cache.hash_key(cache.hash_structures(frames), hypers)
            projections = _projections(akey, wkey, K_atomic, weights)
            props = explorer.kpca_properties(projections, "atom")
            props.update(explorer.composition_properties(frames, envs))
            if info is not None:
                y = state.target_values(info.key)
                if info.kind == "atomic":
                    props.update(explorer.target_properties(info.key, y[:len(struct_of)], unit=unit, target="atom"))
                    atom_color = info.key
                else:
                    per_struct = explorer.target_properties(info.key, y[:n_struct], unit=unit,
                                                            n_atoms=n_atoms[:n_struct], extensive=info.extensive)
                    for name, p in per_struct.items():
                        props[f"structure's {name}"] = explorer.prop(np.asarray(p["values"], dtype=float)[struct_of],
                                                                     "atom", units=p.get("units"),
                                                                     description=p.get("description"))
            if test_only and fitted[1]["kind"] == "atomic":
                # per-atom predictions: the atoms of the test structures that are on this map
                test, result = fitted
                starts = np.concatenate([[0], np.cumsum(n_atoms)])
                rows = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in test])
                on_map = rows < len(struct_of)
                models, y_true = model_rows(result, test)
                models = {k: {"pred": np.asarray(v["pred"])[on_map],
                              "std": None if v["std"] is None else np.asarray(v["std"])[on_map]}
                          for k, v in models.items()}
                props.update(explorer.model_properties(len(struct_of), rows[on_map], np.asarray(y_true)[on_map],
                                                       models, unit=unit, target="atom"))
                atom_color = "|error| (mixed)" if "|error| (mixed)" in props else atom_color
            title = f"{len(envs)} atomic environments of {n_struct} structures"
            if test_only and fitted[1]["kind"] == "atomic":
                rows = np.flatnonzero(np.isin(struct_of, fitted[0]))
                if len(rows) == 0:
                    st.info(f"None of the first {n_struct} structures is a test structure; showing all.",
                            icon=":material/info:")
                    rows = None
                else:
                    envs = [envs[i] for i in rows]
                    title = f"{len(rows)} atomic environments of the test structures among the first {n_struct}"

        if rows is not None:
            props = explorer.take(props, rows)
        target_key_env = target_key if level == "structures" or (info and info.kind == "atomic") else \
            f"structure's {target_key}"
        colour = explorer.default_color(props, target_key_env)
        map_key = "mixed" if ss["map.nu"] == "mixed" else f"ν={ss['map.nu']}"
        if f"{map_key} PC1" not in props:
            map_key = "mixed"
        x, y_axis = f"{map_key} PC1", f"{map_key} PC2" if f"{map_key} PC2" in props else f"{map_key} PC1"
        view = explorer.settings(x=x, y=y_axis, color=colour, target="atom" if envs is not None else "structure",
                                 cutoff=hypers.cutoff, shapes=shape_names, atom_color=atom_color)
        mixed_label = ("mixed kernel: fitted weights" if weights is not None else
                       "mixed kernel: equal weights on ν ≥ 1")
        data = explorer.dataset(frames, props, name=title,
                                description=f"Kernel PCA of Wigner kernels ({mixed_label}); hypers "
                                            f"{hypers.to_json()}",
                                environments=envs, cutoff=hypers.cutoff, shapes=shapes)

    if data is None:  # the error was shown
        return
    st.markdown(f"**{title}**, coloured by *{colour}*")
    explorer_widget.viewer(data, settings=view, key="map.chemiscope", height=640, structure_ids=structure_ids)
    sel = ss.get(explorer_widget.SELECTED)
    formulas = datasets.formulas(ds)
    if sel is not None and 0 <= int(sel) < ds.n:
        sel = int(sel)
        extra = ""
        if info is not None and info.kind == "scalar":
            extra = f" · {info.key} {state.target_values(info.key)[sel]:.6g} {unit}"
        st.markdown(f"**Selected: structure {sel} · {formulas[sel]}**{extra} — the same structure is selected on "
                    "the Data and Models pages.")
    st.caption(f"Axes, colour and size: chemiscope's menus (⚙ at the map's top left) list every property. "
               f"PC = kernel principal component of the cosine-normalised, centred kernel ({mixed_label}). "
               + ("In environment mode the centre atom is highlighted and the cutoff "
                  f"({hypers.cutoff:g} Å) drawn." if envs is not None else ""))

    table = pd.DataFrame({name: p["values"] for name, p in data["properties"].items()})
    widgets.downloads(None, name="map", key="map.scatter", table=table,
                      extra={"chemiscope": ("map.chemiscope.json",
                                            lambda: explorer.to_json(dict(data, settings=view)),
                                            "application/json")})
    fname, payload, mime = widgets.dataset_file(ds)
    widgets.reproduce([cli_command("kernels", hypers, fname, atomic=level != "structures" or None, out="K.npz")],
                      {"data": {"file": fname, "digest": ds.digest}, "hypers": hypers,
                       "map": {"level": level, "kernel": map_key, "colour": colour}},
                      key="map", files={"structures": (fname, payload, mime)})
    st.caption("The map's coordinates are the kernel PCA (wkviz.evaluation.projection.project_all) of the kernels "
               "in K.npz; the chemiscope file opens at chemiscope.org or with chemiscope.show.")


nav.run_page(render, "Map")
