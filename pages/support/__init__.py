"""The dashboard's shared layer (imported by app.py and every page as ``from pages.support import common``).

It lives in a sub-package so that Streamlit, which lists every ``pages/*.py`` file as a page, never lists it.
"""
