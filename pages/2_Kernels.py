"""Kernels: hyperparameters (in a form), cost estimate, computation with progress/ETA/cancel, per-ν heatmaps,
body-order spectrum and timing. Large data sets (``jobs.is_large``) also get tiles on Dask into an on-disk
kernel store, which a later session (or a store computed by the CLI) reuses."""

import io

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import jobs, nav, state, widgets
from wkviz.cli.reproduce import cli_command
from wkviz import Hypers
from wkviz.presets import PRESET_NAMES, PRESETS
from wkviz.views import figures


@st.cache_data(show_spinner=False, max_entries=16)
def _spectrum(kernel_key: str, weights_key: str, _K, _weights):
    return figures.spectrum_table(_K, _weights)


def _heatmap_table(sub, idx, nus):
    """Long table (nu, row, column, cosine similarity) of the shown kernel blocks."""
    rows, cols = np.meshgrid(idx, idx, indexing="ij")
    parts = [pd.DataFrame({"nu": nu, "row_structure": rows.ravel(), "column_structure": cols.ravel(),
                           "cosine_similarity": figures.normalized_kernel(sub[nu]).ravel()}) for nu in nus]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _hyper_input(name: str) -> None:
    """The form input of hyperparameter ``name``: label, range, step and tooltip from its metadata
    (:meth:`wkviz.Hypers.spec`), so the form offers only values :class:`~wkviz.Hypers` accepts."""
    spec = Hypers.spec(name)
    help = spec.widget.get("help", spec.help)
    key = f"kernels.{name}"
    toggle = spec.widget.get("toggle")
    # an optional length that is switched off is greyed out (inside a form the switch takes effect on Apply)
    off = bool(toggle) and not st.session_state.get(toggle, True)
    if off:
        help += " Off: tick the box above and apply to set it."
    if spec.choices is not None:
        st.selectbox(spec.widget["label"], list(spec.choices), key=key, **state.KEEP, help=help)
        return
    lo, hi = (spec.type(v) for v in spec.widget_bounds)
    if spec.type is int:
        st.slider(spec.widget["label"], min_value=lo, max_value=hi, key=key, **state.KEEP, help=help, disabled=off)
    else:
        st.number_input(spec.widget["label"], min_value=lo, max_value=hi, step=spec.widget["step"], key=key,
                        **state.KEEP, help=help, disabled=off)


def _store_panel(ds, hypers, request, est, kres, running):
    """Tiles into an on-disk store (compute, resume or load) for a large request; returns a started job or None."""
    with st.container(border=True):
        st.subheader("Large data set: tiles into an on-disk kernel store")
        st.markdown(
            f"This request is above the large-data limit ({jobs.large_rule()}). Its kernel can be computed as tiles "
            f"of structures × structures on a local Dask cluster ({jobs.TILE_WORKERS} single-threaded worker "
            "processes) and streamed into a store on disk: a cancelled or interrupted run resumes with the finished "
            "tiles, and a later session reuses them. A store made by `python -m wkviz kernels … --store PATH` loads "
            "the same way if it holds exactly these structures and hyperparameters.")
        if request["atomic"]:
            st.info("Atom-level kernels are not computed as tiles: untick 'per atom' to use a store "
                    "(per-atom targets need the in-memory computation on fewer structures).", icon=":material/info:")
            return None
        default = jobs.default_store_path(ds, hypers, request)
        st.text_input("Store directory", key="kernels.store_path", **state.KEEP, placeholder=str(default),
                      help="Empty: a directory in your cache folder named by the content hash of these structures "
                           "and hyperparameters. Type the path of an existing store to load or resume it; a store "
                           "of other structures or hyperparameters is refused.")
        path = jobs.store_path(ds, hypers, request)
        status = None
        with widgets.user_errors("This store cannot be used"):
            status = jobs.store_status(path, ds, hypers, request)
        if status is None:
            return None
        if status.exists:
            rest = ("all done: loading it computes nothing." if status.complete
                    else f"the other {status.tiles_total - status.tiles_done} will be computed.")
            st.markdown(f"Store `{status.path}`: **{status.tiles_done} of {status.tiles_total} tiles** already done "
                        f"({status.tile_size} × {status.tile_size} structures each); {rest}")
        else:
            st.markdown(f"New store `{status.path}`: **{status.tiles_total} tiles** of up to {status.tile_size} × "
                        f"{status.tile_size} structures (the upper triangle of the symmetric kernel).")
        if not est["fits"]:
            st.caption(f"The whole kernel ({widgets.format_bytes(est['output_bytes'])}) exceeds the memory budget: it "
                       "will stay in the store only. The sparse model on the Models page needs only N×M kernels.")
        if kres is not None:
            st.caption("The kernels of this request are already in memory.")
            return None
        label = ("Load the kernels from the store" if status.complete else
                 "Resume: compute the missing tiles" if status.tiles_done else "Compute as tiles into the store")
        if st.button(label, key="kernels.tiles.btn", icon=":material/grid_view:", disabled=running):
            with widgets.user_errors("Could not start the tiled computation"):
                return jobs.start_tile_job(ds, hypers, request, path)
    return None


def render() -> None:
    ss = st.session_state
    widgets.page_header("Kernels", "Wigner kernels of every body order ν between all structures of the data set.")

    ds = state.dataset()
    info = state.target_info()
    request = state.kernel_request(info)

    # ---- hyperparameters ---------------------------------------------------------------------------------------
    preset, why = ss.get("wk.preset", state.applied_preset())
    p1, p2 = st.columns([1, 2], vertical_alignment="bottom")
    with p1:
        st.selectbox("Preset", list(PRESET_NAMES), key="kernels.preset", format_func=lambda n: PRESETS[n].label,
                     on_change=state.on_preset_change, **state.KEEP,
                     help="Starting values for the form below, chosen from the elements and cells of each new data "
                          "set; choosing another fills the form, and fields you edit afterwards keep your values.")
    with p2:
        st.caption(f"**{PRESETS[preset].label}**: {PRESETS[preset].why} ({why}). Source: {PRESETS[preset].source}.")
    with st.form("kernels.form", border=True):
        c1, c2, c3 = st.columns(3, gap="large")
        with c1:
            _hyper_input("nu_max")
            _hyper_input("lambda_max")
        with c2:
            _hyper_input("cutoff")
            _hyper_input("cutoff_width")
            _hyper_input("density_width")
            # short labels and no tooltip (it is on the field below): a column of the form is ~150 px wide in a 1,000 px
            # window, and a checkbox label beside a tooltip icon was cut off
            st.checkbox("radial weight", key="kernels.radial_on", **state.KEEP)
            _hyper_input("radial_scale")
            _hyper_input("radial_exponent")
        with c3:
            st.checkbox("σ grows", key="kernels.scaling_on", **state.KEEP)
            _hyper_input("density_scaling")
            _hyper_input("species_coupling")
            _hyper_input("hydrogen_weight")
            _hyper_input("hydrogen_center_weight")
            _hyper_input("normalization")
            st.checkbox("per atom", key="kernels.atomic", **state.KEEP)
            st.caption("Per atom: kernels between every pair of atoms, for per-atom targets (always on for them) and environment "
                       "maps; memory grows as (total atoms)².")
        submitted = st.form_submit_button("Apply and estimate the cost", type="primary", key="kernels.apply.btn",
                                          icon=":material/calculate:")
    if submitted:
        with widgets.user_errors("These hyperparameters cannot be used"):
            ss["wk.hypers"] = state.hypers_from_widgets()
            ss["wk.applied_preset"] = ss.get("wk.preset", state.applied_preset())
            request = state.kernel_request(info)

    hypers = state.applied_hypers()
    kres, key = state.find_kernel(ds, hypers, request)
    job = ss.get("wk.kernel_job")
    running = job is not None and not job.done

    # ---- estimate and start ------------------------------------------------------------------------------------
    est = None
    with widgets.user_errors("Cannot estimate this request"):
        est = jobs.estimate(ds, hypers, request)
    if est is not None:
        m = st.columns([0.8, 1, 1.2, 1.2])
        m[0].metric("Structures", f"{ds.n:,}")
        m[1].metric("Atom pairs (same element)", widgets.format_count(est["n_pairs"]),
                    help=f"{est['n_pairs']:,} ordered pairs of same-element central atoms; symmetric requests compute "
                         "each pair once.")
        m[2].metric("Memory", widgets.format_bytes(est["memory_bytes"]),
                    help=f"Peak of what grows with the request: neighbour lists ({est['neighbours']:,} pairs within "
                         f"the cutoff), densities, the largest tile's working set and the kernels "
                         f"({widgets.format_bytes(est['output_bytes'])}). Memory budget "
                         f"{widgets.format_bytes(state.MEMORY_BUDGET)}.")
        m[3].metric("Estimated time", widgets.format_seconds(est["seconds"]),
                    help="From a timed micro-run of the engine on a few of these structures at this request's tile "
                         "size (once per session and kind of request); the progress bar gives the real ETA.")
        extras = []
        if request["tensor_rank"]:
            extras.append(f"λ={request['tensor_rank']} kernels for the {info.kind} target `{info.key}`")
        if request["atomic"]:
            extras.append("atom-level kernels")
        if extras:
            st.caption("Also computing " + " and ".join(extras) + ".")
        if not est["fits"]:
            st.error(f"Not started: {est['reason']}.", icon=":material/memory:")
        if not jobs.is_large(est):
            st.caption(f"Requests with {jobs.large_rule()} also get tiles into an on-disk store here and a sparse "
                       "model on the Models page.")

    start = False
    if kres is None and not running:
        b1, b2 = st.columns([1, 3])
        with b1:
            start = st.button("Compute kernels", key="kernels.compute.btn", type="primary", icon=":material/play_arrow:",
                              disabled=est is None or not est["fits"], width="stretch")
        autostart = ss.pop("wk.autostart", False)
        if (start or autostart) and est is not None and est["fits"]:
            with widgets.user_errors("Could not start the computation"):
                job = jobs.start_kernel_job(ds, hypers, request)
                running = True

    if est is not None and jobs.is_large(est):
        tile_job = _store_panel(ds, hypers, request, est, kres, running)
        if tile_job is not None:
            job, running = tile_job, True

    if running:
        if ss.get("wk.kernel_job_key") != key:
            st.info("Another kernel computation of this session is running (different settings); it continues in "
                    "the background. You can cancel it here.", icon=":material/hourglass_top:")
        jobs.poll_job(job, cancel_key="kernels.cancel.btn", what=job.label)

    tiles = job is not None and job.meta.get("tiles") and job.meta.get("key") == key
    if job is not None and job.done and kres is None and ss.get("wk.kernel_job_key") == key:
        job_state = job.state()
        if job_state.status == "cancelled" and tiles:
            st.warning("The tiled computation was cancelled; the finished tiles stay in the store and are reused when "
                       "you start it again.", icon=":material/cancel:")
        elif job_state.status == "cancelled":
            st.warning("The computation was cancelled; nothing was stored. Start it again when you are ready.",
                       icon=":material/cancel:")
        elif job_state.status == "failed":
            widgets.show_job_failure(job)
        elif job_state.status == "done" and tiles and not job.result["in_memory"]:
            st.info(f"The kernel is complete in the store `{job.result['path']}` but larger than the memory budget "
                    f"({widgets.format_bytes(state.MEMORY_BUDGET)}), so it is not loaded here. The sparse model on the "
                    "Models page needs only N×M kernels; Python reads blocks of the store with "
                    "`wkviz.scale.store.KernelStore`.", icon=":material/info:")

    if kres is None:
        if not running:
            st.info("Kernels for these settings are not computed yet. Press **Compute kernels**; you can move to "
                    "other pages while they compute.", icon=":material/info:")

    # ---- results -----------------------------------------------------------------------------------------------
    def show_results(kres, key):
        K = kres.K
        nu_max = K.shape[0] - 1
        st.success(f"Kernels for {ds.n} structures, ν = 0…{nu_max}, computed in {widgets.format_seconds(kres.seconds)} "
                   f"({kres.n_pairs:,} atom pairs).", icon=":material/check_circle:")
        if tiles and job.done and job.state().status == "done":
            t = job.result
            st.info(f"Tiles: **{t['tiles_computed']} computed**, {t['tiles_reused']} reused from the store, of "
                    f"{t['tiles_total']} ({t['tile_size']} × {t['tile_size']} structures each), {t['where']}. "
                    f"Store: `{t['path']}`.", icon=":material/grid_view:")
        st.markdown(widgets.body_order_legend(range(nu_max + 1)), unsafe_allow_html=True)

        tab_maps, tab_spec, tab_time = st.tabs(["Per-ν kernel heatmaps", "Body-order spectrum", "Timing"])

        with tab_maps:
            c1, c2 = st.columns([2, 1])
            with c1:
                if not ss.get("kernels.show_nu") or max(ss["kernels.show_nu"]) > nu_max:
                    ss["kernels.show_nu"] = list(range(nu_max + 1))
                st.multiselect("Body orders to show", list(range(nu_max + 1)), key="kernels.show_nu", **state.KEEP,
                               format_func=figures.body_order_label)
            with c2:
                order_by = st.selectbox("Order structures by", ["data order", "target value", "number of atoms"],
                                        key="kernels.order", **state.KEEP)
            nmax = 150
            idx = np.arange(ds.n)
            if order_by == "number of atoms":
                idx = np.argsort(kres.n_atoms_A, kind="stable")
            elif order_by == "target value" and info is not None and info.kind != "atomic":
                with widgets.user_errors():
                    y = state.target_values(info.key)
                    idx = np.argsort(y if y.ndim == 1 else np.linalg.norm(y.reshape(len(y), -1), axis=1), kind="stable")
            idx = idx[:nmax]
            sub = K[:, idx][:, :, idx]
            nus = sorted(ss["kernels.show_nu"]) or [nu_max]
            fig = figures.kernel_heatmaps(sub, nus, normalize=True)
            widgets.chart(fig, "kernels.heatmaps.chart")
            st.caption(f"Cosine-normalised kernels k(A,B)/√(k(A,A)k(B,B)) of the first {len(idx)} structures"
                       f"{' (ordered by ' + order_by + ')' if order_by != 'data order' else ''}. Higher ν sharpens "
                       "similarities: the off-diagonal fades as body order grows.")
            long = _heatmap_table(sub, idx, nus)

            def _npz():
                buf = io.BytesIO()
                kres.to_npz(buf)
                return buf.getvalue()

            widgets.downloads(fig, name="kernel_heatmaps", key="kernels.heatmaps", table=long,
                             extra={"K.npz": ("K.npz", _npz, "application/octet-stream")})

        with tab_spec:
            fit = ss.get("wk.fit")
            weights = None
            if fit is not None and fit.get("kernel_key") == key and fit.get("weights_fitted"):
                weights = {int(k): v for k, v in fit["weights_fitted"].items()}
            table = _spectrum(key, str(weights), K, weights)
            c1, c2 = st.columns(2, gap="large")
            with c1:
                fig1 = figures.body_order_spectrum(table, "effective_rank", title="Directions resolved by each ν")
                widgets.chart(fig1, key="kernels.spectrum.chart")
            with c2:
                if weights is not None:
                    fig2 = figures.body_order_spectrum(table, "weight_share", title="Share of each ν in the fitted model")
                else:
                    fig2 = figures.body_order_spectrum(table, "mean_similarity", title="How alike structures look at each ν")
                widgets.chart(fig2, key="kernels.spectrum2.chart")
            st.caption("Effective rank: participation ratio (Σλ)²/Σλ² of the eigenvalues of the normalised K^ν, the number "
                       "of independent directions the ν-kernel uses on these structures. Once a model is fitted, the right "
                       "panel shows how much each body order contributes to it.")
            widgets.downloads(fig1, name="body_order_spectrum", key="kernels.spectrum", table=table)

        with tab_time:
            t = kres.timings or {}
            m = st.columns(4)
            m[0].metric("Wall time", widgets.format_seconds(kres.seconds))
            m[1].metric("Atom pairs", widgets.format_count(kres.n_pairs), help=f"{kres.n_pairs:,}")
            m[2].metric("Throughput (pairs/s)", widgets.format_count(kres.n_pairs / max(kres.seconds, 1e-9)))
            m[3].metric("Estimate was", widgets.format_seconds(est["seconds"]) if est else "–")
            if t:
                st.dataframe(pd.DataFrame({"stage": list(t), "seconds": [float(v) for v in t.values()]}), hide_index=True,
                             column_config={"seconds": st.column_config.NumberColumn(format="%.3f s")})
            from wkviz.engine.wigner import build_plan

            rows = []
            for nu in range(1, 9):
                with widgets.user_errors():
                    e = jobs.estimate(ds, hypers.replace(nu_max=nu), request)
                    terms = build_plan(hypers.lambda_max, nu, hypers.schedule, hypers.normalization).n_terms
                    rows.append({"nu": nu, "method": "estimate for this data set", "seconds": e["seconds"],
                                 "terms": terms})
            rows.append({"nu": nu_max, "method": "measured", "seconds": kres.seconds})
            cost = pd.DataFrame(rows)
            fig = figures.cost_vs_nu(cost, title="Time against ν_max: a step every second body order")
            widgets.chart(fig, "kernels.cost.chart")
            st.caption("The time grows in steps, not smoothly: the reduced schedule runs the expensive equivariant "
                       "(Clebsch–Gordan) recursion only up to ⌈ν_max/2⌉ and gets the higher orders by cheap "
                       "contractions, so ν_max = 3 and 4 (or 5 and 6) need the same recursion. Labels: multiply-adds "
                       "per pair of environments (terms of the Wigner program). No step multiplies the cost by the "
                       "number of features, as explicit ν-body features would.")
            widgets.downloads(fig, name="cost_vs_nu", key="kernels.cost", table=cost)

        # ---- reproduce ---------------------------------------------------------------------------------------------
        fname, payload, mime = widgets.dataset_file(ds)
        cmd = cli_command("kernels", hypers, fname, atomic=bool(request["atomic"]) or None,
                          tensor_rank=request["tensor_rank"] or None, out="K.npz")
        cmds = [cmd]
        if tiles and job.done and job.state().status == "done":
            cmds += ["# the same kernel as tiles on a local Dask cluster, into (or from) the store",
                     cli_command("kernels", hypers, fname, tensor_rank=request["tensor_rank"] or None,
                                 scheduler="local", workers=jobs.TILE_WORKERS, store=job.result["path"],
                                 out="K.npz")]
        widgets.reproduce(cmds, {"data": {"file": fname, "structures": ds.n, "digest": ds.digest}, "hypers": hypers,
                                 "atomic": request["atomic"], "tensor_rank": request["tensor_rank"]},
                         key="kernels", files={"structures": (fname, payload, mime)})


    if kres is not None:
        show_results(kres, key)


nav.run_page(render, "Kernels")
