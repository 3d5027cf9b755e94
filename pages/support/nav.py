"""Page set-up and navigation: the page files, the sidebar's page list, links between pages, and
:func:`run_page`, the one call every page file ends with.

The dashboard is a Streamlit multipage app of the ``pages/`` kind: ``app.py`` is the Home page and every
``pages/<n>_<Name>.py`` file one more page (its number gives the order, its name the URL ``/<Name>``).
Streamlit runs whichever file the user asked for — through the sidebar, a deep link on the first request of
a fresh server, ``st.switch_page`` or ``AppTest.switch_page`` — and never runs ``app.py`` before it. So no file
relies on another having run: each one ends with a single :func:`run_page` call that sets the page up
(wide layout, session state, sidebar) and turns bad input (:class:`wkviz.errors.WkvizError`) into a message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import streamlit as st
from streamlit.errors import StreamlitAPIException

from wkviz.errors import WkvizError

from .state import init_state
from .widgets import sidebar


# --------------------------------------------------------------------------------------------------------------
# Pages (paths relative to app.py, the form st.page_link and st.switch_page take)
# --------------------------------------------------------------------------------------------------------------
HOME = "app.py"


DATA = "pages/1_Data.py"

KERNELS = "pages/2_Kernels.py"

MODELS = "pages/3_Models.py"

CURVES = "pages/4_Learning_curves.py"

MAP = "pages/5_Map.py"

TEACH = "pages/6_Teach.py"


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    icon: str


#: The sidebar navigation, by section. Streamlit's own page list is switched off
#: (``client.showSidebarNavigation = false`` in .streamlit/config.toml) because it would label the Home page
#: "app" (the entry point's file name) and has no sections or icons; every other label is exactly the one
#: Streamlit derives from the file name (tests/test_app.py checks this, and the order, against Streamlit).
NAVIGATION = {
    "Start": (NavItem(HOME, "Home", ":material/home:"),),
    "Workflow": (
        NavItem(DATA, "Data", ":material/database:"),
        NavItem(KERNELS, "Kernels", ":material/grid_on:"),
        NavItem(MODELS, "Models", ":material/model_training:"),
        NavItem(CURVES, "Learning curves", ":material/trending_down:"),
        NavItem(MAP, "Map", ":material/scatter_plot:"),
    ),
    "Understand": (NavItem(TEACH, "Teach", ":material/school:"),),
}


#: Where unexpected errors of the pages go, with their traceback (the page itself shows one sentence).
LOG = logging.getLogger("wkviz.app")


def show_unexpected(exc: BaseException, doing: str) -> None:
    """An error that is not bad input (a bug, a full disk): one sentence in the page, the traceback in the log.

    ``client.showErrorDetails = "none"`` (.streamlit/config.toml) covers what escapes even this (a widget
    callback): Streamlit then shows a generic notice without message, type or trace.
    """
    LOG.error("unexpected error while %s", doing, exc_info=(type(exc), exc, exc.__traceback__))
    st.error(f"Something went wrong while {doing}; the details are in the log.", icon=":material/bug_report:")


# Type size for projectors is set in .streamlit/config.toml (theme.baseFontSize); plotly figures set their own
# (wkviz.views.figures.FONT_SIZE). Keep wide pages from stretching past what a projector shows well.
_PAGE_CSS = "<style>.block-container { padding-top: 2.2rem; max-width: 1600px; }</style>"


def run_page(render: Callable[[], None], title: str) -> None:
    """Set a page up, draw it with ``render()``, and show errors as one sentence, never a traceback.

    Every page file (``app.py`` included) makes this one call, so a page looks and behaves the same however it
    was reached: wide layout, session defaults, the sidebar with navigation and the current data set / target /
    hyperparameters. A :class:`~wkviz.errors.WkvizError` escaping ``render`` (bad input the page did not
    handle where it happened) becomes an ``st.error`` with its message; any other exception (a bug) becomes
    "Something went wrong while drawing the <title> page; the details are in the log." with the traceback in
    the log (:func:`show_unexpected`). The sidebar is still drawn. Streamlit's own control flow
    (``st.rerun``, ``st.stop``, ``st.switch_page``) derives from ``BaseException`` and passes through.

    Parameters
    ----------
    render : callable
        Draws the page body; takes no arguments.
    title : str
        Page title for the browser tab.
    """
    st.set_page_config(page_title=f"{title} · wkviz", page_icon="⚛️", layout="wide",
                       initial_sidebar_state="expanded")
    st.markdown(_PAGE_CSS, unsafe_allow_html=True)
    ready = _guarded(init_state, "setting up the session")
    with st.sidebar:
        navigation()
        session_box = st.container()
    if ready:
        _guarded(render, f"drawing the {title} page")
    # Drawn after the page so it shows what the page has just computed (kernels, a fit).
    with session_box:
        _guarded(sidebar, "drawing the sidebar")


def _guarded(draw: Callable[[], object], doing: str) -> bool:
    """``draw()``, with its errors shown as one sentence; False when it failed."""
    try:
        draw()
        return True
    except WkvizError as exc:
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - a bug must not reach the page as a traceback
        show_unexpected(exc, doing)
    return False


def page_link(page: str, label: str, icon: str | None = None) -> bool:
    """``st.page_link`` to a page of the app; plain text when that page is not registered.

    Pages are registered when Streamlit runs ``app.py`` (the usual ``streamlit run app.py``). A page file run
    on its own (``python -m streamlit run pages/2_Kernels.py`` from the repository root, which puts the root on
    ``sys.path`` for ``pages.support``; ``AppTest.from_file("pages/2_Kernels.py")``) knows no other page; a link
    there would raise, so the label is shown without a link.
    """
    try:
        st.page_link(page, label=label, icon=icon)
        return True
    except StreamlitAPIException:
        st.markdown(f"{label}")
        return False


def navigation() -> None:
    """The sidebar's page list, by section (:data:`NAVIGATION`)."""
    linked = True
    for section, items in NAVIGATION.items():
        st.caption(section)
        for item in items:
            linked = page_link(item.path, item.label, item.icon) and linked
    if not linked:
        st.caption("This page was started on its own; run `streamlit run app.py` to move between pages.")
    st.divider()


def needs(what: str, page: str, label: str, icon: str = ":material/arrow_forward:") -> None:
    """A friendly pointer to the page that provides a missing prerequisite."""
    st.info(what, icon=":material/info:")
    page_link(page, label, icon)
