"""wkviz dashboard and its Home page: `streamlit run app.py` (or `make run`).

This file is the Home page and the entry point; the other pages are ``pages/<n>_<Name>.py`` (the number gives the
sidebar order, the name the URL ``/<Name>``), and the layer they share is the package ``pages/support/``. All
computation is in the wkviz package.

A ``pages/`` folder next to the entry point makes this a Streamlit multipage app of the original ("v1") kind:
Streamlit itself lists the pages and, for every run, executes only the file of the page asked for — this one
for Home, ``pages/2_Kernels.py`` for ``/Kernels`` (also on the first request of a fresh server) — never this file
first. So no set-up may live here for the others: every page file, this one included, makes one call,
``nav.run_page(render, title)``, which sets the page up the same way (wide layout, session defaults, the
sidebar with navigation and the current data set / target / hyperparameters) and shows bad input as a message.
``st.navigation`` must not be called anywhere: it would switch Streamlit to the other ("v2") mode.

No file touches ``sys.path``: ``wkviz`` is importable through the editable install (``pip install -e .``), and
``pages.support`` because Streamlit puts the entry point's folder (this one) on ``sys.path`` for every run.
"""

import streamlit as st

from pages.support import nav, state, widgets
from wkviz.views import figures


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
    widgets.page_header(
        "Wigner kernels, body order by body order",
        "Equivariant, body-ordered kernels for atomistic machine learning: compute them, fit models, compare "
        "body orders, see what they see.",
    )

    left, right = st.columns([1.05, 1], gap="large")
    with left:
        st.markdown(INTRO, unsafe_allow_html=True)
        st.markdown(widgets.body_order_legend(range(0, 5)), unsafe_allow_html=True)
        st.caption("These colours mean the same body order on every page; black is the mixed kernel, grey (ν=0) "
                   "the composition-only baseline.")
    with right:
        widgets.chart(figures.body_order_picture(4), "home.picture.chart")

    st.divider()
    st.subheader("Your first two minutes")
    ds = state.dataset()
    info = state.target_info()
    target = f"`{info.key}` ({info.unit})" if info is not None and info.unit else (f"`{info.key}`" if info else "—")
    st.markdown(
        f"The **{ds.title}** is already loaded ({ds.n} structures), with target {target}. Follow the steps; each "
        "page also works on its own, and every result stays available while you move around."
    )
    steps = [
        (nav.DATA, ":material/database:", "1 · Data", "look at the molecules, choose the target and the split"),
        (nav.KERNELS, ":material/grid_on:", "2 · Kernels", "compute ν = 0…4 kernels with a live progress bar"),
        (nav.MODELS, ":material/model_training:", "3 · Models", "fit a Gaussian process (weights by its evidence), click a point → 3D"),
        (nav.CURVES, ":material/trending_down:", "4 · Learning curves", "which body order learns fastest?"),
        (nav.MAP, ":material/scatter_plot:", "5 · Map", "explore the data with chemiscope, coloured by the model's error"),
        (nav.TEACH, ":material/school:", "6 · Teach", "what ν=2 cannot see; rotate a molecule; measure the cost"),
    ]
    cols = st.columns(3)
    for i, (page, icon, label, text) in enumerate(steps):
        with cols[i % 3]:
            with st.container(border=True):
                nav.page_link(page, label, icon)
                st.caption(text)

    kres, _ = state.current_kernel()
    if kres is None:
        if st.button("Start: compute the kernels now", key="home.start.btn", type="primary",
                     icon=":material/play_arrow:"):
            st.session_state["wk.autostart"] = True
            st.switch_page(nav.KERNELS)
    else:
        st.success("Kernels for this data set are ready: continue with the model.", icon=":material/check_circle:")
        nav.page_link(nav.MODELS, "Fit a model", ":material/arrow_forward:")


nav.run_page(render, "Home")
