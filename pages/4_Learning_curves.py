"""Learning curves: test error against training size, log–log, for the mixed kernel, each ν and composition."""

import pandas as pd
import streamlit as st

from pages.support import jobs, nav, state, widgets
from wkviz.cli.reproduce import cli_command
from wkviz import cache
from wkviz.evaluation import stored
from wkviz.views import figures


def render() -> None:
    ss = st.session_state
    widgets.page_header("Learning curves", "Which body order learns fastest? Every curve comes from sub-blocks of one "
                                          "kernel matrix: nothing is recomputed.")

    ds = state.dataset()
    info = state.target_info()
    state.sync_target_defaults(info)
    kres, kkey = state.current_kernel()
    reference = None
    with widgets.user_errors("The stored QM9 curve cannot be shown"):
        reference = stored.load_stored_curve(stored.QM9_U0_SPARSE)
    state.sync_stored_curve_default(ds, info, reference)
    if reference is not None:
        st.checkbox("Show the stored QM9 curve", key="curves.stored", **state.KEEP,
                    help=f"A QM9 {reference.target} learning curve measured once, to "
                         f"{int(reference.n_train[-1]):,} training molecules, with the sparse Wigner-kernel model, "
                         f"and shipped with wkviz ({reference.benchmarks}): where a curve goes with far more data "
                         f"than this page computes.")
    show_stored = reference is not None and bool(ss["curves.stored"])
    # Beside the user's curves, on the same axes, only when both are errors of a total energy in eV: then the
    # heights compare and the user sees their curve continue toward the measured one. For any other target (a gap
    # in eV too, a dipole, a unit the user set) the stored curve gets its own small axes and a caption saying that
    # only the slopes compare: a teacher keeps the measured curve's lesson (how fast error falls with data) without
    # inviting a comparison of U0 errors with errors of another quantity. Skipping it would hide that lesson.
    comparable = info is not None and reference is not None and reference.comparable_to(
        info.key, info.unit, kind=info.kind, extensive=info.extensive)


    def lc_options():
        n = ds.n
        n_test = max(1, int(round(float(ss.get("data.test_fraction", 0.2)) * n)))
        n_max = n - n_test
        n_min = max(4, min(10, n_max // 4))
        return n_test, n_min, n_max


    def start_job(sizes, repeats, n_test, intensive, weights, selection, folds):
        from wkviz import evaluation, models

        key = "lc:" + cache.hash_key(kkey, ds.digest, info.key, list(map(int, sizes)), int(repeats), int(n_test),
                                     int(ss.get("data.seed", 0)), bool(intensive), weights, selection, int(folds))
        frames = ds.frames
        kernels = models.KernelSet.from_result(kres)
        seed = int(ss.get("data.seed", 0))

        def work(progress, cancel):
            target = models.TargetData.from_frames(frames, info.key)
            return evaluation.learning_curve(kernels, target, sizes, repeats=repeats, test_size=n_test, seed=seed,
                                             intensive=intensive, progress=progress, cancel=cancel, weights=weights,
                                             selection=selection, n_folds=folds)

        meta = {"key": key, "dataset": ds.digest, "kernel_key": kkey, "target": info.key, "sizes": list(map(int, sizes)),
                "repeats": int(repeats), "n_test": int(n_test), "seed": seed, "intensive": bool(intensive),
                "weights": weights, "selection": selection, "folds": int(folds)}
        job = cache.BackgroundJob(work, label=f"learning curves ({len(sizes)} sizes × {repeats} repeats)", key=key,
                                  use_engine_lock=False, meta=meta).start()
        ss["wk.lc_job"] = job
        return job


    def show_stored_alone(metric, beside_other_target):
        fig = figures.stored_curve_plot(reference, metric=metric, title=f"Stored QM9 {reference.target} curve")
        widgets.chart(fig, "curves.stored.chart")
        if beside_other_target:
            st.caption(f"Your target ({info.key}, {state.unit_label(ds, info)}) is not a total energy in "
                       f"{reference.unit}, so the stored {reference.target} curve has its own axes: compare how "
                       f"steeply the curves fall (their slopes), not their heights.")
        else:
            st.caption("A curve measured once with far more data than this page computes. Compute your own curve "
                       "above" + (" to draw it beside this one." if comparable else "."))
        st.caption(reference.provenance())


    def show_curve(meta, curve):
        table = pd.DataFrame(curve.rows, columns=["model", "n_train", "repeat", "mae", "rmse"])
        unit = curve.unit or None
        c1, c2 = st.columns([1, 3])
        with c1:
            st.radio("Error measure", ["mae", "rmse"], key="curves.metric", **state.KEEP, horizontal=True,
                     format_func=str.upper)
        metric = ss["curves.metric"]
        overlay = show_stored and comparable
        fig = figures.learning_curve_plot(table, metric=metric, unit=reference.unit if overlay else unit,
                                          target=meta["target"],
                                          title=f"Learning curves of {meta['target']}: {meta['repeats']} "
                                                f"repeat{'s' if meta['repeats'] > 1 else ''}, "
                                                f"{meta['n_test']} test structures each",
                                          reference=reference if overlay else None)
        widgets.chart(fig, "curves.plot.chart")
        st.caption("Lines: mean over repeats; bands: ± one standard deviation; slope: least-squares slope of log(error) "
                   "against log(training size). Steeper (more negative) learns faster.")
        if overlay:
            st.caption("Dashed grey diamonds: " + reference.provenance())
        widgets.downloads(fig, name="learning_curves", key="curves.plot", table=table)

        slopes = figures.learning_curve_slopes(table, metric)
        last = table[table["n_train"] == table["n_train"].max()].groupby("model")[metric].agg(["mean", "std"])
        u = f" ({curve.unit})" if curve.unit else ""
        rows = [{"model": figures.model_label(m), f"{metric.upper()} at n={int(table['n_train'].max())}{u}": last.loc[m, "mean"],
                 f"std over repeats{u}": last.loc[m, "std"], "log–log slope": slopes[m]} for m in curve.models]
        if meta["repeats"] == 1:
            for r in rows:
                del r[f"std over repeats{u}"]
        st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="%.4g") for c in rows[0] if c != "model"})

        h = state.applied_hypers()
        fname, payload, mime = widgets.dataset_file(ds)
        cmd = cli_command("learning-curve", h, data=fname, target=meta["target"], sizes=meta["sizes"],
                          repeats=meta["repeats"], test_size=meta["n_test"], seed=meta["seed"],
                          intensive=meta["intensive"] or None, weights=meta["weights"],
                          selection=meta["selection"], folds=meta["folds"],
                          out="lc.csv")
        widgets.reproduce([cmd], {"data": {"file": fname, "digest": ds.digest}, "hypers": h,
                                 "learning_curve": {k: v for k, v in meta.items() if k not in ("key", "dataset",
                                                                                              "kernel_key")}},
                         key="curves", files={"structures": (fname, payload, mime)})
        return overlay


    drawn = None  # True: the user's curve with the stored one on its axes; False: the user's curve alone
    if info is None:
        st.warning("This data set has no learnable target; pick another data set on the Data page.",
                   icon=":material/warning:")
    elif kres is None:
        nav.needs("Learning curves need the kernels of this data set.", nav.KERNELS, "Compute the kernels")
    else:
        n_test, n_min, n_max = lc_options()
        with st.form("curves.form"):
            c1, c2, c3 = st.columns(3, gap="large")
            with c1:
                st.slider("Training sizes (points on a log grid)", min_value=2, max_value=8, key="curves.n_sizes", **state.KEEP)
            with c2:
                st.slider("Repeats (random splits)", min_value=1, max_value=5, key="curves.repeats", **state.KEEP)
            with c3:
                st.checkbox("intensive target (mean kernel)", key="curves.intensive", **state.KEEP, disabled=info.kind == "atomic")
            st.caption(f"From {n_min} to {n_max} training structures, {n_test} test structures per repeat "
                       f"(the Data page's test fraction); every model's weights are chosen on its own training "
                       f"subset, as on the Models page ({ss['models.selection']}).")
            go = st.form_submit_button("Compute learning curves", type="primary", key="curves.run.btn",
                                       icon=":material/play_arrow:")
        job = ss.get("wk.lc_job")
        running = job is not None and not job.done
        if go and not running:
            from wkviz import evaluation

            with widgets.user_errors("Cannot compute learning curves"):
                sizes = evaluation.log_grid(n_min, n_max, int(ss["curves.n_sizes"]))
                job = start_job(sizes, int(ss["curves.repeats"]), n_test,
                                bool(ss["curves.intensive"]) and info.kind != "atomic",
                                jobs.WEIGHT_MODES[ss["models.weights"]],
                                jobs.SELECTIONS[ss["models.selection"]], int(ss["models.folds"]))
                running = True
        if running:
            jobs.poll_job(job, cancel_key="curves.cancel.btn", what=job.label)
        if job is not None and job.done:
            job_state = job.state()
            if job_state.status == "done":
                ss["wk.lc"] = dict(job.meta)
            elif job_state.status == "failed":
                widgets.show_job_failure(job)
            elif job_state.status == "cancelled":
                st.warning("The learning curves were cancelled.", icon=":material/cancel:")
            ss["wk.lc_job"] = None
        lc = ss.get("wk.lc")
        curve = cache.RESULTS.get(lc["key"]) if lc else None
        if curve is not None and lc["dataset"] == ds.digest and lc["kernel_key"] == kkey and lc["target"] == info.key:
            drawn = show_curve(lc, curve)
        elif not running:
            n_models = kres.K.shape[0] + (0 if info.kind == "vector" else 1)
            st.info(f"Press **Compute learning curves**: the composition baseline, each single ν and the mixed kernel "
                    f"({n_models} models) are fitted at every size and repeat.", icon=":material/info:")
    if show_stored and not drawn:
        show_stored_alone(ss.get("curves.metric", "mae"), beside_other_target=drawn is False)


nav.run_page(render, "Learning curves")
