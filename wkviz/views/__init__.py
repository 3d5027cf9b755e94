"""Views: pure functions from results to plotly figures (:mod:`.figures`) and self-contained 3D HTML
(:mod:`.viewer`). Nothing here computes kernels or fits models, and nothing imports streamlit."""
