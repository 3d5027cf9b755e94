"""Maps and distributions of a data set: the kernel-PCA scatter (click → 3D) and histograms.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

from .style import _axis_title, _style

__all__ = [
    "kpca_map",
    "histogram",
]


def kpca_map(
    coords: np.ndarray,
    *,
    ids: Sequence[int],
    color: Sequence | None = None,
    color_label: str = "",
    color_unit: str | None = None,
    categorical: bool = False,
    hover: Sequence[str] | None = None,
    explained: Sequence[float] | None = None,
    selected: Iterable[int] = (),
    title: str | None = None,
    symbol: Sequence[str] | None = None,
) -> go.Figure:
    """Kernel-PCA scatter (first two components) with ids in ``customdata`` for click → 3D.

    Parameters
    ----------
    coords : ndarray of shape (n, ≥2)
    ids : sequence of int
        Row ids (structure index, or global atom index for environment maps).
    color : sequence, optional
        Values to colour by (numbers → colour bar; strings or ``categorical=True`` → one trace per category,
        body-order palette not used here since categories are elements or sets).
    color_label, color_unit : str
    categorical : bool
    hover : sequence of str, optional
        Extra hover text per point (formula, element...).
    explained : sequence of float, optional
        Explained-variance fractions of the components, shown in the axis titles.
    selected : iterable of int
        Ids to ring.
    title : str, optional
    symbol : sequence of str, optional
        Marker symbol group per point (e.g. "train"/"test").

    Returns
    -------
    plotly.graph_objects.Figure
    """
    coords = np.asarray(coords, dtype=float)
    n = coords.shape[0]
    ids = np.asarray(ids)
    hover = list(hover) if hover is not None else [""] * n
    custom = np.empty((n, 2), dtype=object)
    custom[:, 0] = ids
    custom[:, 1] = hover
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros(n)
    fig = go.Figure()
    unit = f" {color_unit}" if color_unit else ""
    base_hover = "id %{customdata[0]} · %{customdata[1]}<br>PC1 %{x:.3g}, PC2 %{y:.3g}"
    if color is None:
        fig.add_trace(go.Scatter(x=coords[:, 0], y=y, mode="markers", customdata=custom, name="structures",
                                 marker=dict(size=8, color="#2f5d9e", opacity=0.85),
                                 hovertemplate=base_hover + "<extra></extra>"))
    elif categorical or not np.issubdtype(np.asarray(color).dtype, np.number):
        color = np.asarray(color).astype(str)
        palette = ["#4a90d9", "#c92a2a", "#2e9e4f", "#f08a24", "#7b4fc4", "#8c564b", "#d6449b", "#1aa3b8",
                   "#9a9a1f", "#3d3d99", "#8c8c8c"]
        # Common chemistry colours keep element maps readable next to the 3D viewer (CPK-like).
        element_colors = {"H": "#9aa0a6", "C": "#333333", "N": "#3050f8", "O": "#ff0d0d", "F": "#56b04a",
                          "S": "#d4b400", "Au": "#d4a017", "Cl": "#1ff01f", "P": "#ff8000"}
        for k, cat in enumerate(sorted(set(color), key=lambda s: (len(s), s))):
            m = color == cat
            fig.add_trace(go.Scatter(
                x=coords[m, 0], y=y[m], mode="markers", name=f"{cat}", customdata=custom[m],
                marker=dict(size=8, opacity=0.85, color=element_colors.get(cat, palette[k % len(palette)])),
                hovertemplate=base_hover + f"<br>{color_label}: {cat}<extra></extra>",
            ))
        fig.update_layout(legend_title_text=color_label)
    else:
        values = np.asarray(color, dtype=float)
        fig.add_trace(go.Scatter(
            x=coords[:, 0], y=y, mode="markers", customdata=custom, name="structures",
            marker=dict(size=8, opacity=0.9, color=values, colorscale="Viridis", showscale=True,
                        colorbar=dict(title=dict(text=_axis_title(color_label, color_unit), side="right"))),
            text=[f"{v:.4g}" for v in values],
            hovertemplate=base_hover + f"<br>{color_label} %{{text}}{unit}<extra></extra>",
        ))
    selected = set(int(s) for s in selected)
    if selected:
        m = np.isin(ids.astype(int), list(selected))
        if m.any():
            fig.add_trace(go.Scatter(x=coords[m, 0], y=y[m], mode="markers", name="shown in 3D", hoverinfo="skip",
                                     marker=dict(size=20, color="rgba(0,0,0,0)",
                                                 line=dict(width=3, color="#f08a24"))))
    ev = list(explained) if explained is not None else []
    fig.update_xaxes(title="PC1 (kernel feature units" + (f", {100 * ev[0]:.0f}% of variance)" if ev else ")"))
    fig.update_yaxes(title="PC2 (kernel feature units" + (f", {100 * ev[1]:.0f}% of variance)" if len(ev) > 1 else ")"))
    fig.update_layout(clickmode="event+select", height=580)  # no dragmode: see parity_plot
    numeric = color is not None and not (categorical or not np.issubdtype(np.asarray(color).dtype, np.number))
    # a colour bar explains numeric colours; a legend would sit on top of it
    return _style(fig, title=title, legend=not numeric and color is not None)


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
