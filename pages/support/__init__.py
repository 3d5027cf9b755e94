"""The dashboard's shared layer, imported by app.py and every page (``from pages.support import nav, state, …``).

Pages stay thin: they read widgets (keys namespaced ``"<page>.<name>"``), call the cached functions here (which
call wkviz), and draw figures built by :mod:`wkviz.views.figures`. Nothing in :mod:`wkviz` imports streamlit.
The modules, each importing only the ones listed before it:

- :mod:`.datasets` — :class:`~.datasets.Dataset`, the loaders (bundled sets, upload, QM9) and the cached wkviz
  calls on a data set (targets, splits, summary), keyed by content digest;
- :mod:`.state` — session state: widget defaults and their persistence across page switches, and the current
  data set, target, split, hyperparameters and kernel;
- :mod:`.widgets` — error messages, downloads, reproduce boxes, charts, the 3D viewer, headers, legends, the
  sidebar's session summary, number formatting;
- :mod:`.jobs` — cost estimates and background jobs (kernels, fits, kernel tiles, sparse models) with their
  progress bar, and the large-data limits;
- :mod:`.nav` — the page files, the sidebar's navigation and :func:`~.nav.run_page`, the call every page ends with.

The layer lives in a sub-package so that Streamlit, which lists every ``pages/*.py`` file as a page, never lists it.
"""
