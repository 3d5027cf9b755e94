"""Teach: body order and completeness (pairs ν=2 cannot tell apart), equivariance (rotate a molecule), and the
cost of body order measured live (Wigner kernels against explicit body-ordered features)."""

import numpy as np
import pandas as pd
import streamlit as st

from pages.support import datasets, jobs, nav, state, widgets
from wkviz import Hypers
from wkviz import cache
from wkviz.engine.spherical import rotation_matrix
from wkviz.evaluation import forces as forces_eval
from wkviz.evaluation import teach
from wkviz.views import figures
from wkviz.views import viewer

# Small, fixed settings: the teaching environments sit within 2.5 Å of their centre, and the demos must answer
# a slider move in well under a second.
TEACH_HYPERS = Hypers(nu_max=4, lambda_max=3, cutoff=4.0, cutoff_width=0.5, density_width=0.3, density_scaling=None)
N_TRAIN = 40
COST_MAX_STRUCTURES = 12
COST_BUDGETS_MB = (64, 256, 512, 1024)
COST_BASIS_CHOICES = (1, 2, 3, 4, "all")


@st.cache_resource(show_spinner="Reading the teaching set…")
def teaching_set():
    from wkviz import data

    return data.load_sample("teaching")


@st.cache_data(show_spinner="Computing the kernels of the pair…", max_entries=16)
def pair_kernels(pair: int, hypers_json: str):
    return teach.pair_kernel_table(teach.teaching_pair(teaching_set(), pair), Hypers.from_json(hypers_json))


@st.cache_resource(show_spinner="Training a small λ=1 dipole model…", max_entries=4)
def dipole_model(digest: str, key: str, hypers_json: str, _frames):
    """A mixed λ=1 model of a vector target on the last N_TRAIN molecules of the data set (trained once)."""
    return teach.fit_dipole_model(_frames, key, Hypers.from_json(hypers_json), N_TRAIN)


@st.cache_data(show_spinner=False, max_entries=64)
def rotated_kernels(digest: str, i: int, angles: tuple, train_key: str, hypers_json: str, _atoms, _train):
    return teach.rotated_kernels(_atoms, _train, angles, Hypers.from_json(hypers_json))


def body_order_section() -> None:
    ss = st.session_state
    st.header("1 · What can a body order see?")
    pairs = teaching_set()
    pair_ids = sorted({int(a.info["pair"]) for a in pairs})
    descr = {int(a.info["pair"]): str(a.info.get("description", "")) for a in pairs}
    c1, c2 = st.columns([1, 2.2], gap="large")
    with c1:
        if ss["teach.pair"] not in pair_ids:
            ss["teach.pair"] = pair_ids[0]
        st.selectbox("Pair of environments", pair_ids, key="teach.pair", **state.KEEP,
                     format_func=lambda p: f"pair {p}: {descr[p][:60]}{'…' if len(descr[p]) > 60 else ''}")
        pid = ss["teach.pair"]
        st.markdown(
            f"**{descr[pid]}**\n\nThe two central atoms have neighbours at the same distances and the same *pairs* of "
            "angles, so every 3-body (ν=2) correlation — and with it SOAP — is identical. Only 4-body correlations "
            "(ν=3) see that the arrangements differ."
        )
    frames = teach.teaching_pair(pairs, pid)
    with c2:
        v1, v2 = st.columns(2)
        for col, atoms in zip((v1, v2), frames):
            with col:
                widgets.show_html_viewer(lambda a=atoms: viewer.environment_html(
                    a, int(a.info["center"]), TEACH_HYPERS.cutoff, height=360,
                    title=f"environment {a.info['label']} · {a.get_chemical_formula()}"), 360)
    table = pair_kernels(pid, TEACH_HYPERS.to_json())
    dist = dict(zip(table["nu"], table["distance"]))
    d1, d2 = st.columns([1.1, 1], gap="large")
    with d1:
        fig = figures.distance_by_nu(dist, title="Distance A–B per ν")
        widgets.chart(fig, "teach.distance.chart")
    with d2:
        st.write("")
        # what the lesson is about first (distance, cosine); the raw kernels, tiny at high ν, after them
        shown = table.rename(columns={"nu": "ν"})[["ν", "distance", "cosine", "k(A,B)", "k(A,A)", "k(B,B)"]]
        st.dataframe(shown, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3g") for c in ("k(A,A)", "k(B,B)", "k(A,B)", "cosine", "distance")})
        st.caption(f"Atom-level kernels of the two central atoms (orange), cutoff {TEACH_HYPERS.cutoff:g} Å (sphere), "
                   f"σ {TEACH_HYPERS.density_width:g} Å, λ_max {TEACH_HYPERS.lambda_max}. Distance √(2 − 2·cos): 0 means "
                   "this body order cannot tell the two environments apart.")
    widgets.downloads(fig, name=f"teaching_pair_{pid}", key="teach.distance", table=table)




def equivariance_section() -> None:
    ss = st.session_state
    st.divider()
    st.header("2 · Equivariance: rotate a molecule")
    ds = state.dataset()
    vector_targets = [t for t in datasets.target_infos(ds) if t.kind == "vector"]
    molecules = teach.molecule_indices(ds.frames)
    # the applied density (every field, present and future), at a body order and λ small enough to be instant
    eq_hypers = state.applied_hypers().replace(nu_max=3, lambda_max=2, cutoff_width=0.5)
    if not molecules:
        st.info("The equivariance demo needs a non-periodic molecule; load the QM9 subset on the Data page.",
                icon=":material/info:")
    else:
        vkey = None
        if vector_targets:
            vkey = next((t.key for t in vector_targets if t.key == "mulliken_dipole"), vector_targets[0].key)
        held_out = molecules[:-N_TRAIN] if len(molecules) > N_TRAIN else molecules
        if "teach.mol" not in ss or ss["teach.mol"] not in molecules:
            # a molecule the dipole model has not seen, with enough atoms and a clear dipole to watch
            candidates = [i for i in held_out[:40] if len(ds.frames[i]) >= 8] or held_out
            if vkey is not None:
                candidates = sorted(candidates, key=lambda i: -float(np.linalg.norm(
                    np.asarray(ds.frames[i].info.get(vkey, np.zeros(3)), dtype=float))))
            ss["teach.mol"] = int(candidates[0])
        # two columns: a third one beside the viewer left the λ=1 heatmap about 180 px wide at a 1,000 px window,
        # its numbers and axis titles on top of each other; the heatmap goes below, beside the invariant chart
        c1, c2 = st.columns([1, 1.6], gap="medium")
        with c1:
            st.number_input("Molecule (index in the data set)", min_value=0, max_value=ds.n - 1, step=1,
                            key="teach.mol", **state.KEEP)
            if ss["teach.mol"] not in molecules:
                st.error("That structure is periodic; choose a molecule.", icon=":material/error:")
            st.slider("α · rotation about z (degrees)", -180, 180, step=5, key="teach.alpha", **state.KEEP)
            st.slider("β · rotation about y (degrees)", 0, 180, step=5, key="teach.beta", **state.KEEP)
            st.slider("γ · rotation about z (degrees)", -180, 180, step=5, key="teach.gamma", **state.KEEP)
            nu_show = st.radio("Body order of the λ=1 block", [1, 2, 3], horizontal=True, key="teach.nu",
                               **state.KEEP, format_func=lambda v: figures.body_order_label(v, short=True))
        i = int(ss["teach.mol"]) if ss["teach.mol"] in molecules else molecules[0]
        atoms = ds.frames[i]
        angles = (float(ss["teach.alpha"]), float(ss["teach.beta"]), float(ss["teach.gamma"]))
        R = rotation_matrix(*angles)
        model, train_idx = None, []
        if vkey is not None:
            with widgets.user_errors("Cannot train the dipole model"):
                model, train_idx = dipole_model(ds.digest, vkey, eq_hypers.to_json(), ds.frames)
        train = [ds.frames[k] for k in train_idx]
        with widgets.user_errors("Cannot compute the rotated kernels"):
            rot, res = rotated_kernels(ds.digest, i, angles, str(train_idx), eq_hypers.to_json(), atoms, tuple(train))
            ref_rot, ref = rotated_kernels(ds.digest, i, (0.0, 0.0, 0.0), str(train_idx), eq_hypers.to_json(), atoms,
                                           tuple(train))
            check = teach.equivariance_check(res, ref, R, nu_show)
            inv, block, scale, dev = check["invariant"], check["block"], check["scale"], check["deviation"]
            arrows = {}
            if model is not None:
                pred = teach.predict_vector(model, res)
                pred0 = teach.predict_vector(model, ref)
                true = R @ np.asarray(atoms.info[vkey], dtype=float) if vkey in atoms.info else None
                arrows = {"predicted": (pred, "#c92a2a")}
                if true is not None:
                    arrows["QM9 (DFT)"] = (true, "#333333")
            with c2:
                widgets.show_structure(rot, structure_id=i, height=380,
                                      arrows=viewer.dipole_arrows(rot, arrows, labelled=False) if arrows else ())
                if model is not None:
                    fmt = lambda v: "[" + ", ".join(f"{x:+.3f}" for x in v) + "]"  # noqa: E731
                    note = " (a training molecule)" if i in train_idx else ""
                    lines = [f":red[**→ predicted**] {vkey}{note}: **{fmt(pred)}** e·Å"]
                    if true is not None:
                        lines.append(f"**→ QM9's DFT dipole**, turned with the molecule: {fmt(true)} e·Å")
                    lines.append(f"R·prediction(A) − prediction(R·A): **{np.abs(R @ pred0 - pred).max():.1e}** e·Å")
                    st.markdown("  \n".join(lines))
                else:
                    st.caption("This data set has no vector target; load the QM9 subset for the dipole arrow.")
            e1, e2 = st.columns([1, 1.2], gap="large")
            with e1:
                widgets.chart(figures.vector_kernel_block(block / scale, zmax=1.0,
                                                         title=f"λ=1 block K(R·A, A), ν={nu_show}"),
                             key="teach.block.chart")
                st.markdown(f"K(R·A, A) − R·K(A, A): **{dev:.1e}** (relative)")
            with e2:
                widgets.chart(figures.kernel_values_by_nu(inv, title="Invariant kernel k(R·A, A)"),
                             key="teach.invariant.chart")
            st.markdown(
                "**What to watch.** Turn the sliders: the invariant (λ=0) kernels between the rotated molecule and "
                "the original stay exactly at 1, for every body order. The λ=1 block is a 3×3 matrix that turns "
                "with the molecule, K(R·A, A) = R·K(A, A), and so does the dipole predicted from it (red arrow): a "
                "λ=1 model cannot help rotating its prediction with the structure."
            )
            st.caption(f"Demo settings: ν_max {eq_hypers.nu_max}, λ_max {eq_hypers.lambda_max}, cutoff "
                       f"{eq_hypers.cutoff:g} Å; dipole model: mixed λ=1 kernel ridge on {len(train_idx)} molecules "
                       "of the data set.")


# ---- 3. cost ---------------------------------------------------------------------------------------------------

WHY_CHEAP = (
    "An explicit ν-body descriptor is a ν-fold tensor product of the neighbour-density expansion, coupled back to "
    "rotation invariants with Clebsch–Gordan coefficients (NICE, ACE, featomic's `DensityCorrelations`). With S "
    "neighbour species and n radial functions per angular channel it has of the order of (S·n)<sup>ν</sup> "
    "invariant features per atom, and every one of them has to be computed and stored. A Wigner kernel never "
    "forms them: it applies the **kernel trick over rotations**. Two environments are compared through h(R), the "
    "overlap of their densities after one is rotated by R, and the ν-body kernel is the average of h(R)<sup>ν</sup> "
    "over all rotations. Written in Wigner D-matrices, h(R) is a short list of (2l+1)×(2l+1) coefficient blocks "
    "(l ≤ λ_max), so each extra body order is **one more product of small D-matrix blocks** instead of one more "
    "factor of S·n features: the cost grows linearly with ν, and the radial and chemical basis enters only the "
    "first block, H<sup>l</sup> = Σ c·c′ — or not at all with the exact ν=1 route. Both routes give the same "
    "kernel (the Wigner kernel is 8π² × the linear kernel of the complete features), which the page checks on "
    "every run."
)


def cost_key(frames_digest: str, hypers: Hypers, nu_max: int, n_radial, nu_basis: int, budget: int) -> str:
    return "cost:" + cache.hash_key(frames_digest, hypers, int(nu_max), "all" if n_radial is None else int(n_radial),
                                    int(nu_basis), int(budget))


def start_cost_job(frames, key: str, hypers: Hypers, nu_max: int, n_radial, nu_basis: int, budget: int):
    """Measure both routes in a worker thread (engine lock held: other sessions' computations would disturb the
    timings)."""
    from wkviz.evaluation import scaling

    def work(progress, cancel):
        return scaling.compare_body_order_cost(frames, hypers, nu_max=nu_max, n_radial=n_radial, nu_basis=nu_basis,
                                               memory_budget=budget, progress=progress, cancel=cancel)

    job = cache.BackgroundJob(work, label=f"measuring both routes on {len(frames)} structures", key=key,
                              meta={"key": key}).start()
    st.session_state["wk.cost_job"] = job
    st.session_state["wk.cost_key"] = key
    return job


def _mb_text(b) -> str:
    if b is None or not np.isfinite(b):
        return "–"
    mb = b / 2**20
    return f"{mb / 1024:,.1f} GB" if mb >= 1024 else f"{mb:,.3g} MB" if mb < 100 else f"{mb:,.0f} MB"


def _budget_text(b: int) -> str:
    mb = b // 2**20
    return f"{mb // 1024} GB" if mb >= 1024 and mb % 1024 == 0 else f"{mb:,} MB"


def show_cost(res, request: dict) -> None:
    """Metrics, charts, table, downloads and reproduction of one :class:`wkviz.evaluation.scaling.CostComparison`."""
    from wkviz.evaluation import scaling

    body = pd.DataFrame(res.body_order)
    basis = pd.DataFrame(res.basis)
    counts = pd.DataFrame(res.feature_counts)
    n_per_l = "/".join(map(str, res.n_radial))
    m = st.columns(4)
    m[0].metric("Atomic environments", f"{res.n_environments:,}", help=f"{res.n_structures} structures; every "
                "run computes the kernels between all pairs of same-element environments.")
    m[1].metric("Density basis", f"{len(res.species)} × {n_per_l}",
                help="Neighbour species × radial functions per l (l = 0…λ_max): the ν=1 channels of the density "
                     f"expansion. The whole optimal basis has {'/'.join(map(str, res.n_radial_full))} functions "
                     "per l.")
    dev = res.max_deviation
    m[2].metric("Kernels agree to", "–" if dev is None else f"{dev:.0e}",
                help="Largest |K_Wigner − 8π²·X Xᵀ| / max|K_Wigner| over every order where both routes ran: the "
                     "two routes compute the same kernel.")
    last = body[(body["route"] == scaling.WIGNER)].sort_values("nu").iloc[-1]
    m[3].metric(f"Wigner kernel up to ν={int(last['nu'])}", widgets.format_seconds(float(last["seconds"])),
                help="Wall time of all orders up to ν, atom-level kernels included.")
    if res.stopped_at is not None:
        stop = body[(body["route"] == scaling.FEATURES) & (body["nu"] == res.stopped_at)].iloc[0]
        ran = f"ran up to ν = {res.stopped_at - 1}" if res.stopped_at > 1 else "did not run"
        st.warning(
            f"**Explicit features {ran}; ν = {res.stopped_at} was not started.** It would need about "
            f"{_mb_text(stop['estimate_bytes'])} for {res.n_environments} environments "
            f"({stop['features']:,.0f} invariant features each), more than the budget of "
            f"{_budget_text(res.memory_budget)} set above; each higher order multiplies "
            f"that by about S·n. The Wigner kernels went on to ν = {int(last['nu'])}.",
            icon=":material/memory:")
    else:
        st.success(f"Both routes ran up to ν = {int(body['nu'].max())} within the "
                   f"{_budget_text(res.memory_budget)} budget: raise the highest body order or the radial basis to see "
                   "the features run out of memory.", icon=":material/check_circle:")

    c1, c2 = st.columns(2, gap="large")
    with c1:
        f_time = figures.route_cost_by_nu(body, "seconds", title="Wall time against body order")
        widgets.chart(f_time, "teach.cost_time.chart")
    with c2:
        f_mem = figures.route_cost_by_nu(body, "peak_bytes", budget=res.memory_budget,
                                         title="Peak memory against body order")
        widgets.chart(f_mem, "teach.cost_memory.chart")
    st.caption(f"Same {res.n_structures} structures, same density (radial basis {n_per_l} per l, λ_max "
               f"{res.hypers.lambda_max}, cutoff {res.hypers.cutoff:g} Å), every order up to ν computed by both "
               "routes. On a few structures both take milliseconds while the features still fit; what explodes is "
               "their number, and with it memory (right) and time (the basis chart below). Time: the fastest of up "
               "to two runs. Memory: peak of NumPy allocations during the run (tracemalloc); hollow markers are "
               "estimates of runs that were not started.")
    c3, c4 = st.columns(2, gap="large")
    with c3:
        f_count = figures.feature_count_plot(counts, title="Invariant features per environment (explicit route)")
        widgets.chart(f_count, "teach.cost_counts.chart")
        st.caption("Counted from the coupling rules, not computed: a Wigner kernel stores no features at all, only "
                   "(2λ+1)² numbers per order and environment pair.")
    with c4:
        f_basis = figures.route_cost_by_basis(basis, title=f"Time against radial basis size at ν = {res.nu_basis}")
        widgets.chart(f_basis, "teach.cost_basis.chart")
        st.caption("Both routes use the optimal radial basis truncated to its first n functions per l. The Wigner "
                   "time does not follow n: the basis only enters its first, ν=1, block; the dotted line needs no "
                   "basis at all.")

    table = pd.DataFrame(res.summary_rows())
    stopped = table["features_status"] == "stopped"
    shown = pd.DataFrame({
        "ν": table["nu"],
        "Wigner time": [widgets.format_seconds(t) for t in table["wigner_seconds"]],
        "Wigner peak memory": [_mb_text(b) for b in table["wigner_peak_bytes"]],
        "features per environment": [f"{int(n):,}" for n in table["features"]],
        "features time": ["not run" if s else widgets.format_seconds(t)
                          for s, t in zip(stopped, table["features_seconds"])],
        "features memory": [f"≈{_mb_text(b)} (estimate)" if s else _mb_text(b)
                            for s, b in zip(stopped, table["features_bytes"])],
        "kernels agree to": ["–" if d is None or not np.isfinite(d) else f"{d:.0e}" for d in table["deviation"]],
        "explicit features": ["stopped: over the memory budget" if s else "measured" for s in stopped],
    })
    st.dataframe(shown, hide_index=True)
    long = pd.concat([body.assign(experiment="body order"), basis.assign(experiment=f"basis size at ν={res.nu_basis}")],
                     ignore_index=True)
    widgets.downloads(f_time, name="cost_time_vs_nu", key="teach.cost_time", table=long)
    ds = state.dataset()
    ids = request["ids"]
    fname, payload, mime = widgets.dataset_file(ds, ids, suffix="_cost")
    n_arg = "None" if request["n_radial"] is None else str(request["n_radial"])
    code = [
        "from ase.io import read",
        "from wkviz import Hypers, scaling",
        "",
        f'frames = read("{fname}", ":")',
        f"hypers = Hypers.from_json('{res.hypers.to_json()}')",
        f"res = scaling.compare_body_order_cost(frames, hypers, nu_max={int(body['nu'].max())}, n_radial={n_arg},",
        f"                                      nu_basis={res.nu_basis}, memory_budget={res.memory_budget})",
        "print(res.summary_rows())",
        "# the larger, recorded version: python benchmarks/bench_body_order.py",
    ]
    widgets.reproduce(code, {"data": {"file": fname, "structures": [int(i) for i in ids], "digest": ds.digest},
                            "hypers": res.hypers,
                            "comparison": {"nu_max": int(body["nu"].max()), "n_radial": n_arg,
                                           "nu_basis": res.nu_basis, "memory_budget_bytes": res.memory_budget}},
                     key="teach.cost", files={"structures": (fname, payload, mime)}, language="python",
                     title="Reproduce these measurements (Python, config JSON)")


def cost_section() -> None:
    ss = st.session_state
    st.divider()
    st.header("3 · Why higher body orders stay cheap")
    st.markdown(WHY_CHEAP, unsafe_allow_html=True)
    ds = state.dataset()
    formulas = datasets.formulas(ds)
    ids = [int(i) for i in (ss.get("teach.cost_ids") or []) if 0 <= int(i) < ds.n][:COST_MAX_STRUCTURES]
    if not ids:
        ids = list(range(min(4, ds.n)))
    ss["teach.cost_ids"] = ids
    with st.form("teach.cost.form", border=True):
        c1, c2, c3 = st.columns([1.6, 1, 1], gap="large")
        with c1:
            st.multiselect("Structures to measure", list(range(ds.n)), key="teach.cost_ids", **state.KEEP,
                           max_selections=COST_MAX_STRUCTURES,
                           format_func=lambda i: f"{i} · {formulas[i]} ({len(ds.frames[i])} atoms)",
                           help="A few structures of the current data set: both routes compute the kernels between "
                                "all their atoms, at every body order.")
            st.caption("Uses the Kernels page's cutoff, density width and λ_max.")
        with c2:
            st.slider("Highest body order ν", min_value=2, max_value=6, key="teach.cost_nu_max", **state.KEEP)
            st.select_slider("Radial functions per l (both routes)", COST_BASIS_CHOICES, key="teach.cost_n_radial",
                             **state.KEEP, help="The optimal radial basis truncated to its first n functions per "
                                                 "angular channel; 'all' keeps the whole basis.")
        with c3:
            st.selectbox("Memory budget of the explicit features", COST_BUDGETS_MB, key="teach.cost_budget_mb",
                         **state.KEEP, format_func=lambda mb: f"{mb:,} MB" if mb < 1024 else f"{mb // 1024} GB",
                         help="A feature run that would need more is not started (estimated beforehand from the "
                              "exact sizes of its arrays).")
            st.slider("Body order of the basis-size experiment", min_value=2, max_value=4, key="teach.cost_nu_basis",
                      **state.KEEP)
        go = st.form_submit_button("Measure both routes", type="primary", key="teach.cost.btn",
                                   icon=":material/timer:")
    ids = [int(i) for i in ss["teach.cost_ids"]]
    if not ids:
        st.info("Pick at least one structure to measure.", icon=":material/info:")
        return
    frames = [ds.frames[i] for i in ids]
    hypers = state.applied_hypers()
    n_radial = None if ss["teach.cost_n_radial"] == "all" else int(ss["teach.cost_n_radial"])
    budget = int(ss["teach.cost_budget_mb"]) * 2**20
    nu_max, nu_basis = int(ss["teach.cost_nu_max"]), int(ss["teach.cost_nu_basis"])
    key = cost_key(cache.hash_structures(frames), hypers, nu_max, n_radial, nu_basis, budget)
    job = ss.get("wk.cost_job")
    running = job is not None and not job.done
    if go:
        # what the results below show: the last request, kept while the widgets change
        ss["wk.cost_request"] = {"key": key, "ids": ids, "n_radial": n_radial, "nu_max": nu_max,
                                 "dataset": ds.digest}
        if not running and cache.RESULTS.get(key) is None:
            job = start_cost_job(frames, key, hypers, nu_max, n_radial, nu_basis, budget)
            running = True
    if running:
        jobs.poll_job(job, cancel_key="teach.cost.cancel.btn", what=job.label)
    request = ss.get("wk.cost_request")
    if request is not None and request["dataset"] != ds.digest:
        request = None  # measured on another data set: its structure indices mean nothing here
    if job is not None and job.done and request is not None and job.key == request["key"]:
        job_state = job.state()
        if job_state.status == "cancelled":
            st.warning("The measurement was cancelled.", icon=":material/cancel:")
        elif job_state.status == "failed":
            widgets.show_job_failure(job)
    res = cache.RESULTS.get(request["key"]) if request else None
    if res is None:
        if not running:
            st.info("Choose a few structures and press **Measure both routes** (about 10–30 s with the defaults; "
                    "you can cancel at any time).", icon=":material/info:")
        return
    if request["key"] != key:
        st.caption("Showing the last measurement; the settings above have changed since. Press the button to "
                   "measure them.")
    show_cost(res, request)



@st.cache_resource(show_spinner="Reading the gold clusters…")
def gold_md_setup():
    return forces_eval.gold_md_setup()


def md_section() -> None:
    """A learned gold potential against EMT itself: the same start and velocities, NVE, the trajectory in 3D and
    the energy conservation of both."""
    from ase import Atoms

    ss = st.session_state
    st.divider()
    st.header("4 · A learned potential in molecular dynamics")
    st.markdown("A potential learned from EMT's energies and forces drives molecular dynamics like EMT itself. Both "
                "start from the same gold cluster with the same velocities (Maxwell–Boltzmann, no net momentum or "
                "rotation) and run at constant energy (velocity Verlet): a potential whose forces are the exact "
                "gradient of its energy conserves the total energy, whatever its errors; the trajectories drift "
                "apart as the errors add up.")
    start, train = gold_md_setup()
    meta = ss.get("wk.force_fit")
    fitted = cache.RESULTS.get(meta["key"]) if meta is not None else None
    sources = ["fit on gold clusters here"] + (["the Models page's energy + force model"] if fitted else [])
    for key, value in (("teach.md_steps", 150), ("teach.md_dt", 2.0), ("teach.md_temp", 300.0)):
        ss.setdefault(key, value)
    if ss.get("teach.md_source") not in sources:
        ss["teach.md_source"] = sources[0]
    with st.form("teach.md.form", border=True):
        c1, c2, c3, c4 = st.columns([1.6, 1, 1, 1], gap="medium")
        with c1:
            source = st.radio("Learned potential", sources, key="teach.md_source", **state.KEEP,
                              help=f"Here: {len(train)} bundled EMT gold clusters, {forces_eval.MD_ACTIVE} active "
                                   "environments, the long-range gold settings (about 20 s on two cores). The Models "
                                   "page's model was fitted on its own training split (the start cluster is the "
                                   "smallest bundled one, relaxed with EMT).")
        with c2:
            steps = st.number_input("Steps", min_value=10, max_value=1000, step=10, key="teach.md_steps", **state.KEEP)
        with c3:
            dt = st.number_input("Time step (fs)", min_value=0.5, max_value=5.0, step=0.5, key="teach.md_dt",
                                 **state.KEEP)
        with c4:
            temp = st.number_input("Temperature (K)", min_value=0.0, max_value=2000.0, step=50.0,
                                   key="teach.md_temp", **state.KEEP)
        go = st.form_submit_button("Run both", type="primary", key="teach.md.btn", icon=":material/play_arrow:")
    job = ss.get("wk.md_job")
    running = job is not None and not job.done
    if go and not running:
        use_models = source != "fit on gold clusters here" and fitted is not None
        with widgets.user_errors("Cannot run the molecular dynamics"):
            job = jobs.start_md_job(start, model=fitted["model"] if use_models else None,
                                    model_key=meta["key"] if use_models else None,
                                    train=None if use_models else train, steps=int(steps), timestep_fs=float(dt),
                                    temperature_K=float(temp))
            ss["wk.md_request"] = job.meta["key"]
            running = True
    if running:
        jobs.poll_job(job, cancel_key="teach.md.cancel.btn", what=job.label)
    if job is not None and job.done and job.meta["key"] == ss.get("wk.md_request"):
        js = job.state()
        if js.status == "cancelled":
            st.warning("The molecular dynamics was cancelled.", icon=":material/cancel:")
        elif js.status == "failed":
            widgets.show_job_failure(job)
    res = cache.RESULTS.get(ss.get("wk.md_request") or "")
    if res is None:
        if not running:
            st.info(f"Press **Run both**: {start.get_chemical_formula()} ({len(start)} atoms), the smallest "
                    "bundled gold cluster relaxed with EMT (the bundled clusters are rattled several eV above a "
                    "minimum, and a run from there would heat up by thousands of K).", icon=":material/info:")
        return
    runs = res["runs"]
    n_atoms = len(start)
    m = st.columns(3)
    for col, name in zip(m, runs):
        col.metric(f"Drift, {name} (meV/atom/ps)", f"{1000 * runs[name]['drift_eV_per_ps'] / n_atoms:+.3g}",
                   help="Slope of a straight line through the total energy, per atom.")
    dev = forces_eval.trajectory_rmsd(runs["learned"]["positions"], runs["EMT"]["positions"])
    m[2].metric("Position RMSD at the end (Å)", f"{dev[-1]:.3g}",
                help="Root-mean-square distance between the atoms of the two trajectories at the last frame.")
    fig = figures.energy_conservation(runs, title="Energy conservation: learned potential and EMT")
    widgets.chart(fig, "teach.md.chart")
    widgets.downloads(fig, name="energy_conservation", key="teach.md.dl", table=pd.DataFrame(
        {"time_fs": runs["EMT"]["time_fs"],
         **{f"{part}_{name}_eV": runs[name][part] for name in runs for part in ("kinetic", "potential", "total")}}))
    times = runs["EMT"]["time_fs"]
    if not 0 <= int(ss.get("teach.md_frame", 0)) < len(times):  # a shorter run than the last one
        ss["teach.md_frame"] = 0
    k = st.slider("Frame", min_value=0, max_value=len(times) - 1, key="teach.md_frame",
                  help="Move along the two trajectories (every recorded step).")
    st.caption(f"t = {times[k]:.0f} fs; the two clusters {dev[k]:.3g} Å apart (RMSD).")
    v1, v2 = st.columns(2, gap="medium")
    for col, name in zip((v1, v2), runs):
        with col:
            run = runs[name]
            frame = Atoms(numbers=run["numbers"], positions=run["positions"][k], cell=run["cell"], pbc=run["pbc"])
            widgets.show_structure(frame, height=320, title=f"{name} · t = {times[k]:.0f} fs")


def render() -> None:
    widgets.page_header("Teach", "Four experiments for a lecture: what a body order can see, what equivariance means, "
                                "why Wigner kernels stay cheap, and a learned potential in molecular dynamics.")
    body_order_section()
    equivariance_section()
    cost_section()
    md_section()


nav.run_page(render, "Teach")
