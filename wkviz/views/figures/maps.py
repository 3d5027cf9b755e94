"""Distributions of a data set (histograms). The kernel-PCA map is chemiscope's (wkviz.views.explorer builds
its dataset)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import _axis_title, _style

__all__ = [
    "histogram",
]


def histogram(values: np.ndarray, *, label: str, unit: str | None = None, title: str | None = None,
              nbins: int | None = None, integer: bool = False) -> go.Figure:
    """Histogram of one quantity with its unit on the x axis."""
    values = np.asarray(values, dtype=float)
    fig = go.Figure(go.Histogram(x=values, nbinsx=nbins, marker_color="#2f5d9e", opacity=0.9,
                                 xbins=dict(size=1) if integer else None,
                                 hovertemplate=f"{label} %{{x}}<br>%{{y}} structures<extra></extra>"))
    fig.update_xaxes(title=_axis_title(label, unit))
    fig.update_yaxes(title="structures (count)")
    fig.update_layout(bargap=0.05)
    return _style(fig, title=title, legend=False)
