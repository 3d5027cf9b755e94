"""Views: pure functions from results to plotly figures (:mod:`.figures`, a package by subject), downloads
(:mod:`.export`: PNG, CSV, extended XYZ, chemiscope and configuration JSON) and self-contained 3D HTML
(:mod:`.viewer`). Nothing here computes kernels or fits models, and nothing imports streamlit."""
