"""wkviz dashboard: `streamlit run app.py` (or `make run`).

The entry point only sets the page up, declares the navigation and draws the sidebar; each page lives in
app_pages/ and the shared app layer in app_pages/common.py. All computation is in the wkviz package.

The folder is deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder next to the entry point as
a legacy (v1) multipage app and, on the first run of a process (and in every ``AppTest.switch_page`` run), executes
``pages/<name>.py`` directly, skipping this file — no layout, no sidebar, no state initialisation.
"""

import os
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `streamlit run /elsewhere/app.py` still finds wkviz and app_pages
    sys.path.insert(0, str(ROOT))

# kaleido (PNG export) needs a Chrome; use the system Chromium when there is one, never download one.
if "BROWSER_PATH" not in os.environ and os.path.exists("/usr/bin/chromium"):
    os.environ["BROWSER_PATH"] = "/usr/bin/chromium"

from app_pages import common  # noqa: E402
from wkviz.errors import WkvizError  # noqa: E402

# An emoji favicon: a ":material/…:" page icon is fetched from fonts.gstatic.com, which fails offline.
st.set_page_config(page_title="wkviz · Wigner kernels", page_icon="⚛️", layout="wide",
                   initial_sidebar_state="expanded")

# Type size for projectors is set in .streamlit/config.toml (theme.baseFontSize); plotly figures set their own
# (wkviz.figures.FONT_SIZE). Keep wide pages from stretching past what a projector shows well.
st.markdown("<style>.block-container { padding-top: 2.2rem; max-width: 1600px; }</style>", unsafe_allow_html=True)

common.init_state()

pages = {
    "Start": [
        st.Page(common.HOME, title="Home", icon=":material/home:", default=True),
    ],
    "Workflow": [
        st.Page(common.DATA, title="Data", icon=":material/database:"),
        st.Page(common.KERNELS, title="Kernels", icon=":material/grid_on:"),
        st.Page(common.MODELS, title="Models", icon=":material/model_training:"),
        st.Page(common.CURVES, title="Learning curves", icon=":material/trending_down:"),
        st.Page(common.MAP, title="Map", icon=":material/scatter_plot:"),
    ],
    "Understand": [
        st.Page(common.TEACH, title="Teach", icon=":material/school:"),
    ],
}
page = st.navigation(pages, position="sidebar", expanded=True)
try:
    page.run()
except WkvizError as exc:
    # Pages show bad-input errors where they happen; this is the net for any they did not anticipate.
    st.error(str(exc), icon=":material/error:")
common.sidebar()
