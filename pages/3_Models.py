"""Models: fit (GP evidence or cross-validation), body-order weights, test metrics (R² of the target minus the
composition baseline, per-atom MAE), parity plot → 3D, errors by size/element, model comparison (mixed vs each ν vs
composition) on one or several random splits (mean ± standard error, paired differences:
:mod:`wkviz.evaluation.compare`). Large data sets (``jobs.is_large``) also get the sparse
(projected-process) model, shown in the same table and parity plot as the exact ones."""

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import datasets, jobs, nav, state, widgets
from wkviz.cli.reproduce import cli_command
from wkviz import cache
from wkviz.views import export, figures
from wkviz.views import viewer
from wkviz.errors import WkvizError
from wkviz.evaluation import forces as forces_eval


def render() -> None:
    ss = st.session_state
    widgets.page_header("Models", "Kernel ridge / Gaussian-process regression on Σ_ν c_ν K^ν; weights chosen on the "
                                 "training set only (GP evidence or k-fold cross-validation).")

    ds = state.dataset()
    info = state.target_info()
    state.sync_target_defaults(info)
    kres, kkey = state.current_kernel()
    fit_job = ss.get("wk.fit_job")
    fit_running = fit_job is not None and not fit_job.done
    sparse_job = ss.get("wk.sparse_job")
    sparse_running = sparse_job is not None and not sparse_job.done
    est = None
    if info is not None:
        try:
            est = jobs.estimate(ds, state.applied_hypers(), state.kernel_request(info))
        except (WkvizError, ValueError):  # a bad request is reported on the Kernels page
            est = None
    large = jobs.is_large(est)
    KIND_COMPONENTS = {"vector": ["x", "y", "z"], "tensor": ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]}


    def current_fit():
        """The session's finished fit if it matches the current data, kernels, target and split."""
        fit = ss.get("wk.fit")
        if fit is None:
            return None
        train, test = state.split()
        if (fit["dataset"] != ds.digest or fit["kernel_key"] != kkey or fit["target"] != (info.key if info else None)
                or not np.array_equal(fit["test"], test) or not np.array_equal(fit["train"], train)):
            return None
        result = cache.RESULTS.get(fit["key"])
        return None if result is None else (fit, result)


    def current_sparse():
        """The session's finished sparse fit if it matches the current data, hypers, target and split."""
        meta = ss.get("wk.sparse_fit")
        if meta is None or info is None:
            return None
        try:
            train, test = state.split()
        except (WkvizError, ValueError):
            return None
        if (meta["dataset"] != ds.digest or meta["target"] != info.key or meta["hypers"] != state.applied_hypers()
                or not np.array_equal(meta["test"], test) or not np.array_equal(meta["train"], train)):
            return None
        result = cache.RESULTS.get(meta["key"])
        return None if result is None else (meta, result)


    def option_widgets(compare: bool):
        """Body-order weights, how they are chosen, CV folds, mean kernel (and the comparison switch): the exact
        form's options, also drawn in the sparse panel when there is no exact form (``compare`` False; the sparse
        model always chooses by CV)."""
        c1, c2, c3 = st.columns([1.4, 1.1, 1], gap="large")
        with c1:
            st.selectbox("Body-order weights", list(jobs.WEIGHT_MODES), key="models.weights", **state.KEEP,
                         help="free: one positive weight per ν. Kernel exponential: the published law "
                              "c_ν = C·α^ν/ν! (two parameters) plus a free composition weight.")
        with c2:
            if not compare:
                st.caption("Chosen by k-fold cross-validation (the sparse model has no evidence search).")
            else:
                st.selectbox("Chosen by", list(jobs.SELECTIONS), key="models.selection", **state.KEEP,
                             help="How the weights and the regularisation are chosen on the training set. GP "
                                  "evidence: the Gaussian-process marginal likelihood (uses every training structure "
                                  "at once; on QM9 2 meV more accurate than CV and about 4× faster). k-fold cross-validation: "
                                  "the CV error. The CV error is reported either way; the sparse model always uses "
                                  "CV.")
        with c3:
            st.slider("CV folds", min_value=2, max_value=10, key="models.folds", **state.KEEP,
                      help="Folds of the cross-validation on the training set (the reported CV error, and the "
                           "selection when it is by CV).")
        c4, c5 = st.columns(2, gap="large")
        with c4:
            st.checkbox("intensive target (mean kernel)", key="models.intensive", **state.KEEP,
                        disabled=info.kind == "atomic",
                        help="Intensive targets (gaps, …) use mean kernels K/(n_A·n_B); extensive ones (energies) "
                             "sum kernels.")
        if compare:
            with c5:
                st.checkbox("also fit composition and each single ν", key="models.compare", **state.KEEP,
                            help="The comparison table: is mixing body orders better than the best single one?")
                if "models.splits" not in ss:
                    ss["models.splits"] = jobs.default_splits(ds.n)
                st.number_input("Splits", min_value=1, max_value=20, step=1, key="models.splits", **state.KEEP,
                                help="Random train/test splits of the same sizes on which every model is fitted "
                                     "(split 1 is the one of the Data page, shown in the parity plot). One split "
                                     "decides nothing: with several, the table gives mean ± standard error and the "
                                     "chart the paired difference of every model to the best (or to ν=2). Each "
                                     "split costs one more fit per model; 5 by default on data sets of at most "
                                     f"{jobs.SMALL_FOR_SPLITS:,} structures.")


    def fit_form():
        with st.form("models.form"):
            option_widgets(compare=True)
            return st.form_submit_button("Fit models", type="primary", key="models.fit.btn", icon=":material/play_arrow:")


    def sparse_panel(own_options: bool):
        """The sparse model for a large data set: active points, M with the kernel cost, fit; returns a started job."""
        with st.container(border=True):
            st.subheader("Sparse model for a large data set")
            st.markdown(
                f"This data set is above the large-data limit ({jobs.large_rule()}). A projected-process "
                "(Nyström) model needs only the kernels between the N training structures and M *active* "
                "structures or atomic environments, chosen by farthest-point sampling on ν=2 features, instead of "
                "all N×N; the body orders are mixed and chosen by CV on the training set as in the exact model.")
            if info.kind != "scalar":
                st.info(f"The sparse model learns scalar targets only; `{info.key}` is a {info.kind} target. Pick a "
                        "scalar target on the Data page, or use the exact model on fewer structures.",
                        icon=":material/info:")
                return None
            try:
                train, test = state.split()
            except (WkvizError, ValueError) as exc:
                st.error(f"Cannot split: {exc}", icon=":material/error:")
                return None
            c1, c2 = st.columns(2, gap="large")
            with c1:
                kind = st.radio("Active points", list(jobs.SPARSE_ACTIVE), key="models.sparse_kind", **state.KEEP,
                                horizontal=True, format_func=lambda k: jobs.SPARSE_ACTIVE[k],
                                help="Structures: K_NM between training and active structures. Atomic environments: "
                                     "the sum kernel between each training structure and each active environment "
                                     "(spread over the elements in proportion to their atoms).")
            n_max = len(train) if kind == "structures" else int(sum(len(ds.frames[i]) for i in train))
            if int(ss["models.sparse_m"]) > n_max:
                ss["models.sparse_m"] = n_max
            with c2:
                n_active = st.number_input(f"M · active {jobs.SPARSE_ACTIVE[kind]} (at most {n_max:,})",
                                           min_value=1, max_value=n_max, step=10, key="models.sparse_m", **state.KEEP,
                                           help="More active points: closer to the exact model, cost grows as N×M.")
            e = jobs.sparse_estimate(ds, state.applied_hypers(), train, test, int(n_active), kind)
            m = st.columns(3)
            m[0].metric("Kernel pairs, sparse", f"{e['pairs_sparse']:,}",
                        help=f"Atom pairs of the training × M ({e['n_train']:,} × {e['n_active']:,}) and test × M "
                             f"({e['n_test']:,} × {e['n_active']:,}) kernels.")
            m[1].metric("Kernel pairs, exact N×N", f"{e['pairs_exact']:,}",
                        help=f"Atom pairs of the {e['n_train']:,} × {e['n_train']:,} training kernel.")
            m[2].metric("Estimated kernel time", widgets.format_seconds(e["seconds_sparse"]),
                        help=f"Exact N×N: {widgets.format_seconds(e['seconds_exact'])}.")
            ratio = e["pairs_exact"] / max(e["pairs_sparse"], 1)
            st.caption(f"N×M instead of N×N: {ratio:,.1f}× {'fewer' if ratio >= 1 else 'more'} atom pairs "
                       f"(about {widgets.format_seconds(e['seconds_sparse'])} against "
                       f"{widgets.format_seconds(e['seconds_exact'])}). The estimate stands the first M training "
                       "structures in for the active ones (for environments an upper bound: M environments lie in at "
                       "most M structures, all of whose atoms are computed).")
            if own_options:
                option_widgets(compare=False)
            else:
                st.caption("Body-order weights, CV folds and the mean-kernel choice are those of the form above.")
            if st.button("Fit the sparse model", key="models.sparse.btn", icon=":material/scatter_plot:",
                         disabled=sparse_running):
                with widgets.user_errors("Cannot fit the sparse model"):
                    return jobs.start_sparse_job(
                        ds, kres, info.key, train, test, hypers=state.applied_hypers(), n_active=int(n_active),
                        active_kind=kind, weights=jobs.WEIGHT_MODES[ss["models.weights"]],
                        folds=int(ss["models.folds"]),
                        intensive=bool(ss["models.intensive"]))
        return None


    def show_fit(fit, result, sparse_meta=None):
        kind = result["kind"]
        unit = result["unit"]
        target = fit["target"]
        names = result["order"]
        test = fit["test"]
        n_test = len(test)
        formulas = datasets.formulas(ds)
        if ss["models.show"] not in names:
            ss["models.show"] = names[-1]
        # the model selector on its own row and the units in the labels: six metrics with units in their values
        # were cut to "0.…" at 1,000 px
        with st.columns([1.3, 2.7])[0]:
            st.selectbox("Model shown", names, key="models.show", **state.KEEP, format_func=figures.model_label)
        # three metrics a row: five in a row were cut to "0.…" in the ~510 px a 1,000 px window leaves
        top = st.columns(3) + st.columns(3)[:2]
        shown = result["models"][ss["models.show"]]
        m = shown["metrics"]
        u, uu = (f" {unit}", f" ({unit})") if unit else ("", "")
        nan = float("nan")
        top[0].metric(f"Test MAE{uu}", f"{m['mae']:.4g}", help=f"over {m['n']} test values")
        per_atom = m.get("mae_per_atom", nan)
        # short labels: longer ones were cut off in a third of a 1,000 px window
        top[1].metric(f"MAE/atom{uu}",
                      f"{per_atom:.3g}" if np.isfinite(per_atom) else "—",
                      help="Mean of |error| / atoms of the structure (extensive structure targets only).")
        top[3].metric(f"Test RMSE{uu}", f"{m['rmse']:.4g}")
        top[4].metric(f"Max error{uu}", f"{m['max_error']:.4g}")
        r2_res = m.get("r2_residual", nan)
        if np.isfinite(r2_res):
            top[2].metric("R² residual", f"{r2_res:.4f}",
                          help=f"R² of the target minus the per-element composition baseline fitted on the training "
                               f"set: the share of what composition does not explain that the model learned. R² of "
                               f"{target} itself: {m['r2']:.5f} (for total energies ~1 for any model, composition "
                               "only included: their spread is the molecule size).")
        else:
            top[2].metric(f"R² of {target}", f"{m['r2']:.4f}")

        y_true = np.asarray(result["y_true"])
        y_pred = shown["pred"]
        y_std = shown["std"]
        if kind == "atomic":
            n_atoms = np.array([len(ds.frames[i]) for i in test])
            ids = np.repeat(test, n_atoms)
            local = np.concatenate([np.arange(n) for n in n_atoms])
            labels = [f"{formulas[s]}, atom {a} ({ds.frames[s].get_chemical_symbols()[a]})" for s, a in zip(ids, local)]
        else:
            ids = test
            labels = [formulas[i] for i in test]
        yt = y_true.reshape(len(ids), -1)
        yp = np.asarray(y_pred).reshape(len(ids), -1)
        ys = None if y_std is None else np.asarray(y_std).reshape(len(ids), -1)
        err = np.abs(yp - yt).max(axis=1)
        if ss.get("wk.selected") not in set(int(i) for i in ids):
            ss["wk.selected"] = int(ids[int(np.argmax(err))])

        left, right = st.columns([1.6, 1], gap="large")
        with left:
            # Total energies span thousands of eV while errors are fractions of one: against the composition
            # baseline (Σ_Z n_Z ε_Z, fitted on the training set) the scatter shows what the kernels learned.
            base = result.get("baseline")
            if base is not None:
                if "models.relative" not in ss:
                    ss["models.relative"] = True
                st.checkbox("minus composition baseline", key="models.relative",
                            **state.KEEP, help="Plot target − Σ_Z n_Z ε_Z, the per-element least-squares baseline "
                                               "fitted on the training set, on both axes; the errors are unchanged.")
                if ss["models.relative"]:
                    base = np.asarray(base).reshape(len(ids), -1)
                else:
                    base = None
            fig = figures.parity_plot(yt if yt.shape[1] > 1 else yt[:, 0], yp if yp.shape[1] > 1 else yp[:, 0],
                                      baseline=None if base is None else (base if base.shape[1] > 1 else base[:, 0]),
                                      ids=ids, formulas=labels, target=target, unit=unit or None,
                                      sigma=None if ys is None else (ys if ys.shape[1] > 1 else ys[:, 0]),
                                      component_names=KIND_COMPONENTS.get(kind), selected=[ss["wk.selected"]],
                                      title=f"{figures.model_label(ss['models.show'])}: MAE {m['mae']:.3g}{u} on "
                                            f"{n_test} test structures")
            selection = widgets.chart(fig, "models.parity.chart", on_select="rerun",
                                    selection_mode=("points", "box", "lasso"))
            picked = widgets.selected_ids(selection)
            if picked and picked[0] != ss.get("wk.selected"):
                ss["wk.selected"] = picked[0]
                st.rerun()
            st.caption("Click a point (or drag a box) to show that structure in 3D. Error bars: GP predictive "
                       "standard deviation." if ys is not None else "Click a point to show that structure in 3D.")
        with right:
            sid = int(ss["wk.selected"])
            atoms = ds.frames[sid]
            rows = np.flatnonzero(ids == sid)
            r = rows[0]
            arrows = ()
            if kind == "vector":
                arrows = viewer.dipole_arrows(atoms, {"true": (yt[r], "#333333"), "predicted": (yp[r], "#c92a2a")})
            if kind in ("scalar",):
                pm = f" ± {ys[r, 0]:.2g}" if ys is not None else ""
                st.markdown(f"**structure {sid} · {formulas[sid]}** — true {yt[r, 0]:.5g}{u}, predicted "
                            f"{yp[r, 0]:.5g}{pm}{u}, error {yp[r, 0] - yt[r, 0]:+.3g}{u}")
            elif kind == "vector":
                st.markdown(f"**structure {sid} · {formulas[sid]}** — true {np.round(yt[r], 3).tolist()}, predicted "
                            f"{np.round(yp[r], 3).tolist()} ({unit}); arrows: black true, red predicted")
            else:
                st.markdown(f"**structure {sid} · {formulas[sid]}** — largest component error "
                            f"{np.abs(yp[rows] - yt[rows]).max():.3g}{u}")
            widgets.show_structure(atoms, structure_id=sid, height=430, arrows=arrows)

        # ---- weights and comparison ----------------------------------------------------------------------------
        st.divider()
        w1, w2 = st.columns(2, gap="large")
        with w1:
            mixed = result["models"].get("mixed", shown)
            wfig = figures.weights_bar(mixed["weights"], title="Body-order weights (mixed model)")
            widgets.chart(wfig, key="models.weights.chart")
            st.caption("Relative weight of each normalised K^ν in the mixed kernel (they sum to 1).")
            widgets.downloads(wfig, name="body_order_weights", key="models.weights",
                             table=pd.DataFrame({"nu": list(mixed["weights"]), "weight": list(mixed["weights"].values())}))
        comparison = result.get("comparison")
        n_splits = len(comparison.splits) if comparison is not None else 1
        with w2:
            comp = pd.DataFrame([{"model": n, **{k: v for k, v in result["models"][n]["metrics"].items() if k != "unit"},
                                  "cv_mae": result["models"][n]["cv_mae"], "seconds": result["models"][n]["seconds"]}
                                 for n in names])
            if n_splits > 1 and len(comparison.models) > 1:
                best = comparison.best()
                refs = [best] + (["nu=2"] if "nu=2" in comparison.models and best != "nu=2" else [])
                if ss.get("models.paired_ref") not in refs:
                    ss["models.paired_ref"] = refs[0]
                ref = st.radio("Paired difference to", refs, horizontal=True, key="models.paired_ref",
                               format_func=lambda r: f"the best ({figures.model_label(r, short=True)})"
                               if r == best else "ν=2 (SOAP-equivalent)")
                paired = pd.DataFrame(comparison.paired(ref))
                pfig = figures.paired_difference_chart(paired, unit=unit or None, target=target)
                widgets.chart(pfig, key="models.paired.chart")
                st.caption(f"Per split, each model's test MAE minus {figures.model_label(ref, short=True)}'s on the "
                           f"same test structures; bars: mean ± 1 standard error over {n_splits} splits. Within "
                           "2 standard errors: a tie. Hover for the number of splits each side wins.")
                widgets.downloads(pfig, name="paired_differences", key="models.paired", table=paired)
            elif len(names) > 1:
                cfig = figures.model_comparison(comp, unit=unit or None, target=target)
                widgets.chart(cfig, key="models.compare.chart")
                widgets.downloads(cfig, name="model_comparison", key="models.compare", table=comp)
            else:
                st.info("Tick 'also fit composition and each single ν' to compare body orders.", icon=":material/info:")
        # a model fitted on one split only (the sparse model) is compared in the one-split table, beside the others
        if n_splits > 1 and all(n in comparison.models for n in names):
            def pm(mean, se, fmt):
                if not np.isfinite(mean):
                    return "—"
                return f"{mean:{fmt}} ± {se:.2g}" if np.isfinite(se) else f"{mean:{fmt}}"

            summary = comparison.summary()
            uu = f" ({unit})" if unit else ""
            st.dataframe(pd.DataFrame([{
                "model": figures.model_label(r["model"]),
                f"test MAE{uu}": pm(r["mae_mean"], r["mae_se"], ".4g"),
                f"MAE per atom ({unit}/atom)" if unit else "MAE per atom": pm(r["mae_per_atom_mean"],
                                                                               r["mae_per_atom_se"], ".3g"),
                f"RMSE{uu}": pm(r["rmse_mean"], r["rmse_se"], ".4g"),
                f"R² of {target} − composition": pm(r["r2_mean"], r["r2_se"], ".4f"),
                f"CV MAE{uu}": pm(r["cv_mae_mean"], r["cv_mae_se"], ".4g"),
                "splits": r["n_splits"]} for r in summary]), hide_index=True)
            st.caption(f"Mean ± standard error over {n_splits} random splits of {len(fit['train'])}/{len(test)} "
                       "structures (split 1 is the Data page's; every test element occurs in its training part). "
                       "R² is that of the target minus the composition baseline fitted on each training set.")
            widgets.downloads(None, name="model_comparison_splits", key="models.splits_table",
                              table=pd.DataFrame([{k: v for k, v in r.items() if k != "weights"}
                                                  for r in comparison.rows]))
        else:
            uu = f" ({unit})" if unit else ""
            shown_table = comp.assign(model=[figures.model_label(n) for n in comp["model"]])
            st.dataframe(shown_table, hide_index=True, column_config={
                c: st.column_config.NumberColumn(f"{c}{uu}", format="%.4g")
                for c in ("mae", "rmse", "max_error", "cv_mae")} | {
                "r2": st.column_config.NumberColumn(f"R² of {target}", format="%.4f"),
                "r2_residual": st.column_config.NumberColumn(f"R² of {target} − composition", format="%.4f"),
                "mae_per_atom": st.column_config.NumberColumn(f"MAE per atom ({unit}/atom)" if unit else "MAE per atom",
                                                              format="%.3g"),
                "seconds": st.column_config.NumberColumn(format="%.2f s")})

        # ---- errors by size and element ------------------------------------------------------------------------
        if kind != "atomic":
            from wkviz import data, evaluation

            st.divider()
            e1, e2 = st.columns(2, gap="large")
            n_atoms = np.array([len(ds.frames[i]) for i in test])
            by_size = pd.DataFrame(evaluation.errors_by_size(y_true, y_pred, n_atoms))
            counts, species = data.composition_counts([ds.frames[i] for i in test])
            by_el = pd.DataFrame(evaluation.errors_by_element(y_true, y_pred, counts, species))
            from ase.data import chemical_symbols

            by_el["element"] = [chemical_symbols[int(z)] for z in by_el["element"]]
            with e1:
                f1 = figures.error_by_group(by_size, group="n_atoms", group_label="atoms per structure (count)",
                                            unit=unit or None, target=target, title="Error by structure size")
                widgets.chart(f1, key="models.bysize.chart")
                widgets.downloads(f1, name="error_by_size", key="models.bysize", table=by_size)
            with e2:
                f2 = figures.error_by_group(by_el, group="element", group_label="structures containing element",
                                            unit=unit or None, target=target, title="Error by element present")
                widgets.chart(f2, key="models.byelement.chart")
                widgets.downloads(f2, name="error_by_element", key="models.byelement", table=by_el)

        # ---- downloads and reproduce ---------------------------------------------------------------------------
        st.divider()
        st.subheader("Predictions")
        from wkviz import models as wk_models

        test_target = wk_models.TargetData.from_frames([ds.frames[i] for i in test], target)
        s_idx, a_idx, c_idx = test_target.row_labels()
        pred_table = pd.DataFrame({"structure": s_idx, "atom": a_idx, "component": c_idx,
                                   "true": np.asarray(y_true).ravel(), "predicted": np.asarray(y_pred).ravel()})
        if y_std is not None:
            pred_table["std"] = np.asarray(y_std).ravel()
        pred_table.insert(1, "dataset_index", np.asarray(test)[s_idx])
        ext = export.predictions_extxyz([ds.frames[i] for i in test], target, np.asarray(y_pred),
                                         sigma=None if y_std is None else np.asarray(y_std), per_atom=kind == "atomic")
        widgets.downloads(None, name="predictions", key="models.predictions", table=pred_table,
                         extra={"extxyz": ("predictions.extxyz", ext, "chemical/x-extxyz")})
        st.caption("CSV columns as `python -m wkviz fit --out`: structure = index in the test file, atom = −1 for "
                   "structure targets, component 0/1/2 = x/y/z; dataset_index = row in the loaded data set.")
        h = state.applied_hypers()
        train_name, train_data, mime = widgets.dataset_file(ds, fit["train"], "_train")
        test_name, test_data, _ = widgets.dataset_file(ds, fit["test"], "_test")
        files = {"train set": (train_name, train_data, mime), "test set": (test_name, test_data, mime)}
        data_config = {"digest": ds.digest, "train": train_name, "test": test_name, "n_train": len(fit["train"]),
                       "n_test": len(test)}
        if fit is not sparse_meta:
            cmd = cli_command("fit", h, train=train_name, test=test_name, target=target,
                              intensive=bool(fit["intensive"]) and kind != "atomic" or None,
                              weights=fit["weights"], selection=fit["selection"], folds=fit["folds"],
                              out="predictions.csv")
            exact_names = [n for n in names if sparse_meta is None or n != sparse_meta["name"]]
            commands = [cmd]
            if int(fit.get("splits", 1)) > 1:
                all_name, all_data, _ = widgets.dataset_file(ds)
                files["whole data set"] = (all_name, all_data, mime)
                commands += [
                    f"# the comparison on {fit['splits']} random splits (the command line draws every split at "
                    "random; the page's first split is the Data page's)",
                    cli_command("compare", h, data=all_name, target=target, train_size=len(fit["train"]),
                                test_size=len(test), splits=int(fit["splits"]), seed=int(fit.get("seed", 0)),
                                models=exact_names, intensive=bool(fit["intensive"]) and kind != "atomic" or None,
                                weights=fit["weights"], selection=fit["selection"], folds=fit["folds"],
                                out="compare.csv")]
            widgets.reproduce(
                commands,
                {"data": data_config, "target": target, "hypers": h,
                 "model": {"weights": fit["weights"], "selection": fit["selection"], "cv_folds": fit["folds"],
                           "intensive": fit["intensive"],
                           "models": exact_names}},
                key="models", files=files)
        if sparse_meta is not None:
            widgets.reproduce(
                [jobs.sparse_python(sparse_meta, train_name, test_name)],
                {"data": data_config, "target": target, "hypers": h,
                 "model": {"sparse": True, "active": sparse_meta["active_kind"], "n_active": sparse_meta["n_active"],
                           "weights": sparse_meta["weights"], "cv_folds": sparse_meta["folds"],
                           "intensive": sparse_meta["intensive"]}},
                key="models.sparse", files=files, language="python",
                title="Reproduce the sparse model (Python, config JSON)")


    if info is None:
        st.warning("This data set has no learnable target; pick another data set on the Data page.",
                   icon=":material/warning:")
        return
    if kres is None and large and info.kind == "scalar":
        nav.needs("The exact models need the full N×N kernels of this data set, which are not computed; the sparse "
                     "model below needs only the kernels between the structures and M active ones.",
                     nav.KERNELS, "Compute the kernels")
    elif kres is None:
        nav.needs(f"Fit needs the kernels of this data set for the target `{info.key}` "
                     f"({'λ=1 vector kernels' if info.kind == 'vector' else 'λ=2 kernels' if info.kind == 'tensor' else 'atom-level kernels' if info.kind == 'atomic' else 'invariant kernels'}).",
                     nav.KERNELS, "Compute the kernels")
    else:
        submitted = fit_form()
        if submitted and not fit_running:
            with widgets.user_errors("Cannot fit"):
                train, test = state.split()
                names = ["mixed"]
                if ss["models.compare"]:
                    from wkviz import models as wk_models

                    names = wk_models.standard_models(kres.K.shape[0] - 1, info.kind)
                intensive = bool(ss["models.intensive"]) and info.kind != "atomic"
                fit_job, _ = jobs.start_fit_job(ds, kres, kkey, info.key, train, test, names=names,
                                                  weights=jobs.WEIGHT_MODES[ss["models.weights"]],
                                                  selection=jobs.SELECTIONS[ss["models.selection"]],
                                                  folds=int(ss["models.folds"]), intensive=intensive,
                                                  splits=int(ss.get("models.splits", 1)),
                                                  seed=int(ss.get("data.seed", 0)))
                fit_running = True
        if fit_running:
            jobs.poll_job(fit_job, cancel_key="models.cancel.btn", what=fit_job.label)
        if fit_job is not None and fit_job.done and jobs.settle_job(
                fit_job, result_key="wk.fit", cancelled="Fitting was cancelled.",
                show_failure=ss.get("wk.fit_job_key") == fit_job.meta["key"]):
            r = fit_job.result["models"]
            best = r.get("mixed") or next(iter(r.values()))
            ss["wk.fit"].update(mae=best["metrics"]["mae"], unit=fit_job.result["unit"], weights_fitted=best["weights"])

    # ---- the sparse model (large data sets) --------------------------------------------------------------------
    if large:
        started = sparse_panel(own_options=kres is None)
        if started is not None:
            sparse_job, sparse_running = started, True
    if sparse_running:
        jobs.poll_job(sparse_job, cancel_key="models.sparse_cancel.btn", what=sparse_job.label)
    if sparse_job is not None and sparse_job.done and jobs.settle_job(
            sparse_job, result_key="wk.sparse_fit", cancelled="Fitting the sparse model was cancelled."):
        ss["models.show"] = sparse_job.meta["name"]  # show what was just fitted

    # ---- results: the exact models and the sparse one in one table and parity plot -----------------------------
    exact = current_fit() if kres is not None else None
    sparse = current_sparse()
    if exact is not None and sparse is not None:
        fit, result = exact
        merged = dict(result, models={**result["models"], **sparse[1]["models"]},
                      order=list(result["order"]) + list(sparse[1]["order"]))
        show_fit(fit, merged, sparse_meta=sparse[0])
    elif exact is not None:
        show_fit(*exact)
    elif sparse is not None:
        show_fit(sparse[0], sparse[1], sparse_meta=sparse[0])
    elif kres is not None and not fit_running:
        st.info("Choose the options and press **Fit models**. The test set is only used for the final scores.",
                icon=":material/info:")
    force_section(ds)


FORCE_HYPER_CHOICES = {
    "long-range gold settings": "cutoff 6 Å (switching from 5 Å), ν ≤ 3, λ ≤ 2, density width 0.5 Å, no radial "
                                "weight: the settings of BENCHMARKS.md §12, which see all of EMT's gold interactions",
    "the Kernels page's hyperparameters": "the preset or hand-set values applied on the Kernels page (the metals "
                                          "preset's 4.5 Å cutoff misses EMT's third neighbour shell, and the forces "
                                          "come out worse)",
}


def force_section(ds) -> None:
    """Energies and forces: fit an energy-and-force model (sparse GP on active environments) on the training
    split, force parity plot, each test atom's force error in 3D."""
    ss = st.session_state
    if not forces_eval.has_forces(ds.frames):
        return
    st.divider()
    st.subheader("Energies and forces")
    st.markdown("Every structure of this data set has an energy and forces, so a potential can learn both: the energy "
                "is a sum of atomic energies from a sparse GP on M active atomic environments, and the forces are its "
                "exact negative gradient, fitted as derivative observations (body-order weights and the force noise "
                "by the GP evidence on the training split, the energy noise by cross-validation on it).")
    job = ss.get("wk.force_job")
    running = job is not None and not job.done
    try:
        train, test = state.split()
    except (WkvizError, ValueError) as exc:
        st.error(f"Cannot split: {exc}", icon=":material/error:")
        return
    n_env = int(sum(len(ds.frames[i]) for i in train))
    c1, c2 = st.columns([1.6, 1], gap="large")
    with c1:
        choice = st.radio("Hyperparameters", list(FORCE_HYPER_CHOICES), key="models.forces.hypers", **state.KEEP,
                          help="Which kernel hyperparameters the energy-and-force model uses.")
        st.caption(FORCE_HYPER_CHOICES[choice])
    with c2:
        if "models.forces.m" not in ss:
            ss["models.forces.m"] = min(forces_eval.DEFAULT_ACTIVE, n_env)
        if int(ss["models.forces.m"]) > n_env:
            ss["models.forces.m"] = n_env
        n_active = st.number_input(f"M · active environments (at most {n_env:,})", min_value=1, max_value=n_env,
                                   step=10, key="models.forces.m", **state.KEEP,
                                   help="Atomic environments of the training set chosen by farthest-point sampling; "
                                        "cost grows as (force components) × M. 400 on 200 gold clusters takes about a "
                                        "minute on two cores; 800 was no more accurate there.")
    hypers = forces_eval.GOLD_FORCE_HYPERS if choice == "long-range gold settings" else state.applied_hypers()
    if st.button("Fit energy + force model", key="models.forces.btn", icon=":material/bolt:", disabled=running):
        with widgets.user_errors("Cannot fit the energy + force model"):
            job = jobs.start_force_job(ds, train, test, hypers=hypers, n_active=int(n_active), hypers_label=choice)
            running = True
    if running:
        jobs.poll_job(job, cancel_key="models.forces.cancel.btn", what=job.label)
    if job is not None and job.done:
        jobs.settle_job(job, result_key="wk.force_fit", cancelled="Fitting the energy + force model was cancelled.")
    meta = ss.get("wk.force_fit")
    result = None
    if meta is not None and meta["dataset"] == ds.digest:
        result = cache.RESULTS.get(meta["key"])
    if result is None:
        if not running:
            st.info("Press **Fit energy + force model** to learn energies and forces of the training structures.",
                    icon=":material/info:")
        return
    if not (np.array_equal(meta["train"], train) and np.array_equal(meta["test"], test)):
        st.caption("Showing the last fit; the split has changed since. Press the button to fit on the current one.")
    test_ids = result["test"]
    n_atoms = sum(len(f) for f in result["F_true"])
    m = st.columns(4)
    m[0].metric("Energy MAE (eV)", f"{result['energy_mae']:.4g}", help=f"over {len(test_ids)} test structures")
    m[1].metric("Force MAE (eV/Å)", f"{result['force_mae']:.4g}",
                help=f"per Cartesian component, over {n_atoms} test atoms")
    m[2].metric("Force RMSE (eV/Å)", f"{result['force_rmse']:.4g}")
    m[3].metric("Fit time", widgets.format_seconds(result["seconds"]))
    summ = result["summary"]
    st.caption(f"{meta['hypers_label']}, M = {meta['n_active']} active environments, {len(meta['train'])} training "
               f"structures. {forces_eval.describe_noise_choice(summ)}")
    formulas = datasets.formulas(ds)
    per_structure = [float(np.abs(p - t).mean()) for p, t in zip(result["F_pred"], result["F_true"])]
    order = [int(k) for k in np.argsort(per_structure)[::-1]]
    left, right = st.columns([1.2, 1], gap="large")
    with left:
        mode = st.radio("Plot", ["components", "norm"], horizontal=True, key="models.forces.mode",
                        format_func=lambda k: {"components": "each component", "norm": "|F| per atom"}[k])
        fig = figures.force_parity(result["F_true"], result["F_pred"], mode=mode,
                                   structure_ids=np.repeat(test_ids, [len(f) for f in result["F_true"]]))
        widgets.chart(fig, "models.forces.chart")
        widgets.downloads(fig, name="force_parity", key="models.forces.dl", table=pd.DataFrame({
            "structure": np.repeat(test_ids, [len(f) for f in result["F_true"]]),
            "atom": np.concatenate([np.arange(len(f)) for f in result["F_true"]]),
            **{f"F{c}_true": np.concatenate([f[:, k] for f in result["F_true"]]) for k, c in enumerate("xyz")},
            **{f"F{c}_pred": np.concatenate([f[:, k] for f in result["F_pred"]]) for k, c in enumerate("xyz")}}))
    with right:
        pick = st.selectbox("Test structure (largest force error first)", order, key="models.forces.structure",
                            format_func=lambda r: f"{int(test_ids[r])} · {formulas[int(test_ids[r])]} · mean "
                                                  f"|ΔF| {per_structure[r]:.3f} eV/Å")
        r = int(pick)
        atoms = ds.frames[int(test_ids[r])]
        err = result["F_pred"][r] - result["F_true"][r]
        norms = np.linalg.norm(err, axis=1)
        scale = 1.5 / max(float(norms.max()), 1e-12)
        arrows = [viewer.Arrow(tuple(map(float, p)), tuple(float(x) * scale for x in e), "#c92a2a")
                  for p, e in zip(atoms.positions, err)]
        st.markdown(f"**structure {int(test_ids[r])} · {formulas[int(test_ids[r])]}** — arrows: force error "
                    f"(predicted − true) of each atom, the largest ({norms.max():.3f} eV/Å, atom "
                    f"{int(norms.argmax())}) drawn 1.5 Å long; energy error "
                    f"{result['E_pred'][r] - result['E_true'][r]:+.3g} eV.")
        widgets.show_structure(atoms, structure_id=int(test_ids[r]), height=400, arrows=arrows)


nav.run_page(render, "Models")
