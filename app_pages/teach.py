"""Teach: body order and completeness (pairs ν=2 cannot tell apart), equivariance (rotate a molecule), and the
cost of body order."""

import time

import numpy as np
import pandas as pd
import streamlit as st

from app_pages import common
from wkviz import Hypers, cache, figures, viewer

ss = st.session_state
common.page_header("Teach", "Three experiments for a lecture: what a body order can see, what equivariance means, "
                            "and why Wigner kernels stay cheap.")

# Small, fixed settings: the teaching environments sit within 2.5 Å of their centre, and the demos must answer
# a slider move in well under a second.
TEACH_HYPERS = Hypers(nu_max=4, lambda_max=3, cutoff=4.0, cutoff_width=0.5, density_width=0.3)


@st.cache_resource(show_spinner="Reading the teaching set…")
def teaching_set():
    from wkviz import data

    return data.load_sample("teaching")


@st.cache_data(show_spinner="Computing the kernels of the pair…", max_entries=16)
def pair_kernels(pair: int, hypers_json: str):
    from wkviz.kernels import WignerKernel

    frames = [a for a in teaching_set() if int(a.info["pair"]) == pair]
    frames = sorted(frames, key=lambda a: a.info["label"])
    with cache.engine_lock():
        res = WignerKernel(Hypers.from_json(hypers_json)).compute(frames, atomic=True)
    off = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    i, j = off[0] + int(frames[0].info["center"]), off[1] + int(frames[1].info["center"])
    rows = []
    for nu in range(1, res.K_atomic.shape[0]):
        K = res.K_atomic[nu]
        rows.append({"nu": nu, "k(A,A)": K[i, i], "k(B,B)": K[j, j], "k(A,B)": K[i, j],
                     "cosine": K[i, j] / np.sqrt(K[i, i] * K[j, j]),
                     "distance": figures.kernel_distance(K[i, j], K[i, i], K[j, j])})
    return pd.DataFrame(rows)


# ---- 1. body order ---------------------------------------------------------------------------------------------
st.header("1 · What can a body order see?")
pairs = teaching_set()
pair_ids = sorted({int(a.info["pair"]) for a in pairs})
descr = {int(a.info["pair"]): str(a.info.get("description", "")) for a in pairs}
c1, c2 = st.columns([1, 2.2], gap="large")
with c1:
    if ss["teach.pair"] not in pair_ids:
        ss["teach.pair"] = pair_ids[0]
    st.selectbox("Pair of environments", pair_ids, key="teach.pair", **common.KEEP,
                 format_func=lambda p: f"pair {p}: {descr[p][:60]}{'…' if len(descr[p]) > 60 else ''}")
    pid = ss["teach.pair"]
    st.markdown(
        f"**{descr[pid]}**\n\nThe two central atoms have neighbours at the same distances and the same *pairs* of "
        "angles, so every 3-body (ν=2) correlation — and with it SOAP — is identical. Only 4-body correlations "
        "(ν=3) see that the arrangements differ."
    )
frames = sorted([a for a in pairs if int(a.info["pair"]) == pid], key=lambda a: a.info["label"])
with c2:
    v1, v2 = st.columns(2)
    for col, atoms in zip((v1, v2), frames):
        with col:
            common.show_html_viewer(lambda a=atoms: viewer.environment_html(
                a, int(a.info["center"]), TEACH_HYPERS.cutoff, height=360,
                title=f"environment {a.info['label']} · {a.get_chemical_formula()}"), 360)
table = pair_kernels(pid, TEACH_HYPERS.to_json())
dist = dict(zip(table["nu"], table["distance"]))
d1, d2 = st.columns([1.1, 1], gap="large")
with d1:
    fig = figures.distance_by_nu(dist, title="Kernel distance between A and B")
    common.chart(fig, "teach.distance.chart")
with d2:
    st.write("")
    st.dataframe(table.rename(columns={"nu": "ν"}), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.6g") for c in ("k(A,A)", "k(B,B)", "k(A,B)", "cosine", "distance")})
    st.caption(f"Atom-level kernels of the two central atoms (orange), cutoff {TEACH_HYPERS.cutoff:g} Å (sphere), "
               f"σ {TEACH_HYPERS.density_width:g} Å, λ_max {TEACH_HYPERS.lambda_max}. Distance √(2 − 2·cos): 0 means "
               "this body order cannot tell the two environments apart.")
common.downloads(fig, name=f"teaching_pair_{pid}", key="teach.distance", table=table)

# ---- 2. equivariance -------------------------------------------------------------------------------------------
st.divider()
st.header("2 · Equivariance: rotate a molecule")
ds = common.dataset()
vector_targets = [t for t in common.target_infos(ds) if t.kind == "vector"]
molecules = [i for i, a in enumerate(ds.frames) if not a.pbc.any()]
EQ_HYPERS = Hypers(nu_max=3, lambda_max=2, cutoff=common.applied_hypers().cutoff, cutoff_width=0.5,
                   density_width=common.applied_hypers().density_width)
N_TRAIN = 40


@st.cache_resource(show_spinner="Training a small λ=1 dipole model…", max_entries=4)
def dipole_model(digest: str, key: str, hypers_json: str, _frames):
    """A mixed λ=1 model of a vector target on the last N_TRAIN molecules of the data set (trained once)."""
    from wkviz import data, models
    from wkviz.kernels import WignerKernel

    idx = [i for i in range(len(_frames)) if not _frames[i].pbc.any()][-N_TRAIN:]
    train = [_frames[i] for i in idx]
    y = data.get_target(train, key)
    with cache.engine_lock():
        res = WignerKernel(Hypers.from_json(hypers_json)).compute(train, tensor_rank=1)
    est = models.make_regressor("vector", "mixed", nu_max=res.K.shape[0] - 1, intensive=False)
    est.fit(res.K_vector, y, n_atoms=res.n_atoms_A)
    return est, idx


@st.cache_data(show_spinner=False, max_entries=64)
def rotated_kernels(digest: str, i: int, angles: tuple, train_key: str, hypers_json: str, _atoms, _train):
    from wkviz.kernels import WignerKernel

    R = viewer.rotation_matrix(*angles)
    rot = _atoms.copy()
    com = rot.get_center_of_mass()
    rot.positions = (rot.positions - com) @ R.T + com
    with cache.engine_lock():
        res = WignerKernel(Hypers.from_json(hypers_json)).compute([rot], [_atoms] + list(_train), tensor_rank=1)
    return rot, res


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
    c1, c2, c3 = st.columns([1, 1.25, 1.15], gap="medium")
    with c1:
        st.number_input("Molecule (index in the data set)", min_value=0, max_value=ds.n - 1, step=1,
                        key="teach.mol", **common.KEEP)
        if ss["teach.mol"] not in molecules:
            st.error("That structure is periodic; choose a molecule.", icon=":material/error:")
        st.slider("α · rotation about z (degrees)", -180, 180, step=5, key="teach.alpha", **common.KEEP)
        st.slider("β · rotation about y (degrees)", 0, 180, step=5, key="teach.beta", **common.KEEP)
        st.slider("γ · rotation about z (degrees)", -180, 180, step=5, key="teach.gamma", **common.KEEP)
        nu_show = st.radio("Body order of the λ=1 block", [1, 2, 3], horizontal=True, key="teach.nu",
                           **common.KEEP, format_func=lambda v: figures.body_order_label(v, short=True))
    i = int(ss["teach.mol"]) if ss["teach.mol"] in molecules else molecules[0]
    atoms = ds.frames[i]
    angles = (float(ss["teach.alpha"]), float(ss["teach.beta"]), float(ss["teach.gamma"]))
    R = viewer.rotation_matrix(*angles)
    model, train_idx = None, []
    if vkey is not None:
        with common.user_errors("Cannot train the dipole model"):
            model, train_idx = dipole_model(ds.digest, vkey, EQ_HYPERS.to_json(), ds.frames)
    train = [ds.frames[k] for k in train_idx]
    with common.user_errors("Cannot compute the rotated kernels"):
        rot, res = rotated_kernels(ds.digest, i, angles, str(train_idx), EQ_HYPERS.to_json(), atoms, tuple(train))
        ref_rot, ref = rotated_kernels(ds.digest, i, (0.0, 0.0, 0.0), str(train_idx), EQ_HYPERS.to_json(), atoms,
                                       tuple(train))
        k_aa = ref.K[:, 0, 0]
        inv = {nu: float(res.K[nu, 0, 0] / k_aa[nu]) for nu in range(1, res.K.shape[0])}
        block = res.K_vector[nu_show, 0, :, 0, :]
        block0 = ref.K_vector[nu_show, 0, :, 0, :]
        scale = float(np.abs(block0).max()) or 1.0
        dev = float(np.abs(block - R @ block0).max()) / scale
        arrows = {}
        if model is not None:
            pred = model.predict(res.K_vector[:, :, :, 1:, :], n_atoms=res.n_atoms_A)[0]
            pred0 = model.predict(ref.K_vector[:, :, :, 1:, :], n_atoms=ref.n_atoms_A)[0]
            true = R @ np.asarray(atoms.info[vkey], dtype=float) if vkey in atoms.info else None
            arrows = {"predicted": (pred, "#c92a2a")}
            if true is not None:
                arrows["true"] = (true, "#333333")
        with c2:
            common.show_structure(rot, structure_id=i, height=380,
                                  arrows=viewer.dipole_arrows(rot, arrows) if arrows else ())
            if model is not None:
                fmt = lambda v: "[" + ", ".join(f"{x:+.3f}" for x in v) + "]"  # noqa: E731
                note = " (a training molecule)" if i in train_idx else ""
                lines = [f"predicted {vkey}{note}: **{fmt(pred)}** e·Å"]
                if true is not None:
                    lines.append(f"reference (rotated): {fmt(true)} e·Å")
                lines.append(f"R·prediction(A) − prediction(R·A): **{np.abs(R @ pred0 - pred).max():.1e}** e·Å")
                st.markdown("  \n".join(lines))
            else:
                st.caption("This data set has no vector target; load the QM9 subset for the dipole arrow.")
        with c3:
            common.chart(figures.vector_kernel_block(block / scale, zmax=1.0,
                                                     title=f"λ=1 block K(R·A, A), {figures.body_order_label(nu_show)}"),
                         key="teach.block.chart")
            st.markdown(f"K(R·A, A) − R·K(A, A): **{dev:.1e}** (relative)")
        e1, e2 = st.columns([1.2, 1], gap="large")
        with e1:
            common.chart(figures.kernel_values_by_nu(inv, title="Invariant kernel k(R·A, A) / k(A, A)"),
                         key="teach.invariant.chart")
        with e2:
            st.markdown(
                "**What to watch.** Turn the sliders: the invariant (λ=0) kernels between the rotated molecule and "
                "the original stay exactly at 1, for every body order. The λ=1 block is a 3×3 matrix that turns "
                "with the molecule, K(R·A, A) = R·K(A, A), and so does the dipole predicted from it (red arrow): a "
                "λ=1 model cannot help rotating its prediction with the structure."
            )
            st.caption(f"Demo settings: ν_max {EQ_HYPERS.nu_max}, λ_max {EQ_HYPERS.lambda_max}, cutoff "
                       f"{EQ_HYPERS.cutoff:g} Å; dipole model: mixed λ=1 kernel ridge on {len(train_idx)} molecules "
                       "of the data set.")

# ---- 3. cost -----------------------------------------------------------------------------------------------------
st.divider()
st.header("3 · Why higher body orders stay cheap")
st.markdown(
    "An explicit ν-body descriptor multiplies ν copies of the density expansion, so the number of features grows "
    "like (radial × chemical basis)^ν. A Wigner kernel applies the kernel trick *over rotations*: it multiplies "
    "small matrices of Wigner-D coefficients of two environments instead of features, one body order at a time. "
    "Each step costs the same, so the total grows **linearly** with ν and does not depend on any basis size."
)
if st.button("Measure on 10 structures of this data set (ν = 1 … 6)", key="teach.measure.btn",
             icon=":material/timer:"):
    from wkviz.kernels import WignerKernel

    frames = ds.frames[:10]
    rows = []
    bar = st.progress(0.0, text="measuring…")
    with common.user_errors("Cannot measure"):
        for nu in range(1, 7):
            h = common.applied_hypers().replace(nu_max=nu)
            with cache.engine_lock():
                t0 = time.perf_counter()
                WignerKernel(h).compute(frames)
                rows.append({"nu": nu, "method": "Wigner kernel (measured)", "seconds": time.perf_counter() - t0})
            bar.progress(nu / 6, text=f"ν_max = {nu}: {rows[-1]['seconds']:.2f} s")
        ss["wk.teach_cost"] = pd.DataFrame(rows)
if ss.get("wk.teach_cost") is not None:
    cost = ss["wk.teach_cost"]
    fig = figures.cost_vs_nu(cost, title="Measured time against ν_max (10 structures)")
    fig.update_yaxes(type="linear", title="wall time (s)")
    common.chart(fig, "teach.cost.chart")
    common.downloads(fig, name="cost_vs_nu_measured", key="teach.cost", table=cost)
