"""wkviz dashboard and its Home page: `streamlit run app.py` (or `make run`).

This file is the Home page and the entry point; the other pages are ``pages/<n>_<Name>.py`` (the number gives the
sidebar order, the name the URL ``/<Name>``), and the layer they share is ``pages/support/common.py``. All
computation is in the wkviz package.

A ``pages/`` folder next to the entry point makes this a Streamlit multipage app of the original ("v1") kind:
Streamlit itself lists the pages and, for every run, executes only the file of the page asked for — this one
for Home, ``pages/2_Kernels.py`` for ``/Kernels`` (also on the first request of a fresh server) — never this file
first. So no set-up may live here for the others: every page file, this one included, makes one call,
``common.run_page(render, title)``, which sets the page up the same way (wide layout, session defaults, the
sidebar with navigation and the current data set / target / hyperparameters) and shows bad input as a message.
``st.navigation`` must not be called anywhere: it would switch Streamlit to the other ("v2") mode.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `streamlit run /elsewhere/app.py` still finds wkviz and pages.support
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages.support import common  # noqa: E402
from wkviz.views import figures  # noqa: E402


INTRO = """
1. A **Wigner kernel** compares two atomic environments through the overlap of their neighbour densities,
   averaged over every rotation, so it is rotation-invariant by construction.
2. Raising the overlap to the power **ν** inside that average makes the kernel sensitive to correlations between
   ν neighbours and the central atom: **body order ν ↔ (ν+1)-body correlations** (ν=2 is the 3-body,
   SOAP-equivalent kernel).
3. Instead of building feature vectors whose size grows *exponentially* with ν, the kernel is iterated with
   Wigner D-matrix algebra, so its **cost grows linearly with ν** and does not depend on the radial or chemical
   basis.
4. Keeping the angular blocks λ > 0 gives **equivariant** kernels that rotate with the structure, for vector
   and tensor targets such as dipoles.
5. A structure kernel sums atom kernels over same-element pairs, and a model **mixes body orders**,
   Σ<sub>ν</sub> c<sub>ν</sub> K<sup>ν</sup>, learning how much each order matters.
"""


def render() -> None:
    common.page_header(
        "Wigner kernels, body order by body order",
        "Equivariant, body-ordered kernels for atomistic machine learning: compute them, fit models, compare "
        "body orders, see what they see.",
    )

    left, right = st.columns([1.05, 1], gap="large")
    with left:
        st.markdown(INTRO, unsafe_allow_html=True)
        st.markdown(common.body_order_legend(range(0, 5)), unsafe_allow_html=True)
        st.caption("These colours mean the same body order on every page; black is the mixed kernel, grey (ν=0) "
                   "the composition-only baseline.")
    with right:
        common.chart(figures.body_order_picture(4), "home.picture.chart")

    st.divider()
    st.subheader("Your first two minutes")
    ds = common.dataset()
    info = common.target_info()
    target = f"`{info.key}` ({info.unit})" if info is not None and info.unit else (f"`{info.key}`" if info else "—")
    st.markdown(
        f"The **{ds.title}** is already loaded ({ds.n} structures), with target {target}. Follow the steps; each "
        "page also works on its own, and every result stays available while you move around."
    )
    steps = [
        (common.DATA, ":material/database:", "1 · Data", "look at the molecules, choose the target and the split"),
        (common.KERNELS, ":material/grid_on:", "2 · Kernels", "compute ν = 0…4 kernels with a live progress bar"),
        (common.MODELS, ":material/model_training:", "3 · Models", "fit with cross-validation, click a point → 3D"),
        (common.CURVES, ":material/trending_down:", "4 · Learning curves", "which body order learns fastest?"),
        (common.MAP, ":material/scatter_plot:", "5 · Map", "kernel PCA of the data set, coloured by error"),
        (common.TEACH, ":material/school:", "6 · Teach", "what ν=2 cannot see; rotate a molecule; measure the cost"),
    ]
    cols = st.columns(3)
    for i, (page, icon, label, text) in enumerate(steps):
        with cols[i % 3]:
            with st.container(border=True):
                common.page_link(page, label, icon)
                st.caption(text)

    kres, _ = common.current_kernel()
    if kres is None:
        if st.button("Start: compute the kernels now", key="home.start.btn", type="primary",
                     icon=":material/play_arrow:"):
            st.session_state["wk.autostart"] = True
            st.switch_page(common.KERNELS)
    else:
        st.success("Kernels for this data set are ready: continue with the model.", icon=":material/check_circle:")
        common.page_link(common.MODELS, "Fit a model", ":material/arrow_forward:")


common.run_page(render, "Home")
