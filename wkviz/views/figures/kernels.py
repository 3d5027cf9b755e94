"""Kernel figures: heatmaps of K^ν, the body-order spectrum, and the per-ν distances and values of the teaching
page.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ...evaluation.projection import cosine_normalize
from .style import FONT_SIZE, _axis_title, _style, body_order_color, body_order_label

__all__ = [
    "normalized_kernel",
    "kernel_heatmap",
    "kernel_heatmaps",
    "spectrum_table",
    "body_order_spectrum",
    "distance_by_nu",
    "kernel_values_by_nu",
    "vector_kernel_block",
]


#: The cosine-normalised kernel K(A,B)/√(K(A,A)K(B,B)) under the name the figures have always used; the one
#: implementation is :func:`wkviz.evaluation.projection.cosine_normalize` (zero where a self-kernel is
#: zero: an isolated atom has no ν ≥ 1 density).
normalized_kernel = cosine_normalize


def kernel_heatmap(
    K: np.ndarray,
    *,
    nu: int | None = None,
    normalize: bool = True,
    title: str | None = None,
    x_label: str = "structure index",
    y_label: str = "structure index",
) -> go.Figure:
    """Heatmap of one kernel matrix.

    Parameters
    ----------
    K : ndarray of shape (nA, nB)
    nu : int, optional
        Body order, used for the title.
    normalize : bool
        Show the cosine-normalised kernel (dimensionless, 1 on the diagonal) rather than raw values.
    title, x_label, y_label : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    K = np.asarray(K, dtype=float)
    values = cosine_normalize(K) if normalize and K.shape[0] == K.shape[1] else K
    if title is None:
        title = body_order_label(nu) if nu is not None else "kernel"
    cbar = "cosine similarity (dimensionless)" if normalize else "kernel value (dimensionless)"
    fig = go.Figure(
        go.Heatmap(
            z=values,
            colorscale="Viridis",
            colorbar=dict(title=dict(text=cbar, side="right")),
            hovertemplate=f"{y_label} %{{y}}<br>{x_label} %{{x}}<br>k = %{{z:.4g}}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title=_axis_title(y_label, "#"), scaleanchor="x")
    fig.update_xaxes(title=_axis_title(x_label, "#"))
    return _style(fig, title=title, legend=False)


def kernel_heatmaps(
    K: np.ndarray,
    nus: Sequence[int] | None = None,
    *,
    normalize: bool = True,
    max_size: int = 150,
    columns: int = 3,
) -> go.Figure:
    """Side-by-side heatmaps of K[ν] for several body orders, one shared colour scale.

    Parameters
    ----------
    K : ndarray of shape (nu_max+1, nA, nB)
        Per-ν kernels as returned by :class:`wkviz.engine.kernels.WignerKernel`.
    nus : sequence of int, optional
        Which ν to show; all by default.
    normalize : bool
        Cosine-normalise each K[ν] (recommended: raw magnitudes grow like h^ν).
    max_size : int
        Show at most this many rows and columns (the first ones), so the browser stays responsive.
    columns : int
        Panels per row.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    K = np.asarray(K, dtype=float)
    if K.ndim != 3:
        raise ValueError(f"expected per-ν kernels of shape (nu_max+1, nA, nB), got shape {K.shape}")
    nus = list(range(K.shape[0])) if nus is None else [int(n) for n in nus]
    n = len(nus)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"<span style='color:{body_order_color(nu)}'>■</span> {body_order_label(nu)}" for nu in nus],
        horizontal_spacing=0.06,
        vertical_spacing=0.12 if rows > 1 else 0.08,
    )
    sub = K[:, :max_size, :max_size]
    cbar = "cosine similarity" if normalize else "kernel value"
    for i, nu in enumerate(nus):
        values = cosine_normalize(sub[nu]) if normalize and sub.shape[1] == sub.shape[2] else sub[nu]
        r, c = divmod(i, cols)
        fig.add_trace(
            go.Heatmap(
                z=values,
                coloraxis="coloraxis",
                hovertemplate=f"ν={nu}<br>row %{{y}}, column %{{x}}<br>k = %{{z:.4g}}<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        fig.update_yaxes(autorange="reversed", row=r + 1, col=c + 1, scaleanchor=f"x{i + 1 if i else ''}")
        fig.update_xaxes(title_text="structure (#)" if r == rows - 1 else None, row=r + 1, col=c + 1)
        if c == 0:
            fig.update_yaxes(title_text="structure (#)", row=r + 1, col=c + 1)
    zmin = 0.0 if normalize and np.all(sub >= 0) else None
    fig.update_layout(
        coloraxis=dict(colorscale="Viridis", cmin=zmin, cmax=1.0 if normalize else None,
                       colorbar=dict(title=dict(text=f"{cbar}<br>(dimensionless)", side="right"))),
        height=340 * rows + 60,
    )
    return _style(fig, legend=False)


def spectrum_table(K: np.ndarray, weights: Mapping[int, float] | Sequence[float] | None = None) -> pd.DataFrame:
    """How much each body order contributes: per-ν numbers behind :func:`body_order_spectrum`.

    Columns:

    - ``nu``
    - ``effective_rank``: participation ratio (Σλ)²/Σλ² of the eigenvalues λ of the cosine-normalised K[ν]; how
      many independent directions the ν-kernel resolves in this data set (it grows with ν because k^ν ~ h^ν
      sharpens similarities).
    - ``mean_similarity``: mean off-diagonal cosine similarity (1 = all structures look alike at this ν).
    - ``weight_share``: c_ν·mean diag K[ν] / Σ_ν' c_ν'·mean diag K[ν'] for given model weights, else NaN.

    Parameters
    ----------
    K : ndarray of shape (nu_max+1, n, n)
    weights : mapping ν → c_ν or sequence indexed by ν, optional
        Body-order weights of a fitted mixed model, applied to the kernels as passed.

    Returns
    -------
    pandas.DataFrame
    """
    K = np.asarray(K, dtype=float)
    n = K.shape[1]
    rows = []
    if weights is not None and not isinstance(weights, Mapping):
        weights = {i: float(w) for i, w in enumerate(weights)}
    contributions = {}
    for nu in range(K.shape[0]):
        if K.shape[1] != K.shape[2]:
            raise ValueError("spectrum_table needs square kernels (structures against themselves)")
        Kn = cosine_normalize(K[nu])
        eig = np.clip(np.linalg.eigvalsh((Kn + Kn.T) / 2), 0, None)
        denom = float(np.sum(eig**2))
        eff = float(np.sum(eig) ** 2 / denom) if denom > 0 else 0.0
        off = (np.sum(Kn) - np.trace(Kn)) / max(n * (n - 1), 1)
        if weights is not None and nu in weights:
            contributions[nu] = float(weights[nu]) * float(np.mean(np.diag(K[nu])))
        rows.append(dict(nu=nu, effective_rank=eff, mean_similarity=float(off)))
    table = pd.DataFrame(rows)
    total = sum(abs(v) for v in contributions.values())
    table["weight_share"] = [contributions[nu] / total if total > 0 and nu in contributions else np.nan
                             for nu in table["nu"]]
    return table


_SPECTRUM_QUANTITIES = {
    # short: a y-axis title longer than the plot is clipped at the left edge and runs into the chart title
    "effective_rank": ("effective rank", "directions"),
    "mean_similarity": ("mean cosine similarity", "dimensionless"),
    "weight_share": ("share of the mixed kernel", "fraction"),
}


def body_order_spectrum(table: pd.DataFrame, quantity: str = "effective_rank", *, title: str | None = None) -> go.Figure:
    """Bar chart of one per-ν quantity from :func:`spectrum_table`, bars in the body-order colours.

    Parameters
    ----------
    table : pandas.DataFrame
        With columns ``nu`` and ``quantity``.
    quantity : {"effective_rank", "mean_similarity", "weight_share"} or any column name
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    label, unit = _SPECTRUM_QUANTITIES.get(quantity, (quantity, None))
    data = table.dropna(subset=[quantity])
    fig = go.Figure(
        go.Bar(
            x=[body_order_label(nu, short=True) for nu in data["nu"]],
            y=data[quantity],
            marker_color=[body_order_color(nu) for nu in data["nu"]],
            text=[f"{v:.3g}" for v in data[quantity]],
            textposition="outside",
            customdata=data["nu"],
            hovertemplate="%{x}<br>" + label + " = %{y:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(title="body order ν (ν=0: composition)")
    fig.update_yaxes(title=_axis_title(label, unit), rangemode="tozero", automargin=True)
    if len(data):
        top = float(np.nanmax(data[quantity]))
        fig.update_yaxes(range=[0, top * 1.18 if top > 0 else 1])
    return _style(fig, title=title or "Body-order spectrum", legend=False)


def distance_by_nu(distances: Mapping[int, float], *, title: str | None = None, threshold: float | None = 1e-6) -> go.Figure:
    """Kernel distance between two structures/environments at each ν (teaching: ν=2 blind, ν=3 not).

    Parameters
    ----------
    distances : mapping ν → distance √(2 − 2 cos) in [0, 2]
    title : str, optional
    threshold : float, optional
        Distances below it are labelled "identical" (numerical zero).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    nus = sorted(int(k) for k in distances)
    values = [float(distances[nu]) for nu in nus]
    text = [("identical" if threshold is not None and v < threshold else f"{v:.3g}") for v in values]
    fig = go.Figure(go.Bar(
        x=[body_order_label(nu, short=True) for nu in nus], y=values,
        marker_color=[body_order_color(nu) for nu in nus], text=text, textposition="outside", cliponaxis=False,
        customdata=[f"{nu + 1}-body" for nu in nus],
        hovertemplate="%{x} (%{customdata})<br>distance %{y:.3e}<extra></extra>",
    ))
    fig.update_xaxes(title="body order ν")
    top = max(values) if values else 1.0
    fig.update_yaxes(title="distance √(2−2cos) (dimensionless)", range=[0, 1.25 * top if top > 0 else 1])
    return _style(fig, title=title or "Can body order ν tell them apart?", legend=False)


def kernel_values_by_nu(values: Mapping[int, float], *, title: str | None = None,
                        y_label: str = "cosine similarity k(A, B) (dimensionless)") -> go.Figure:
    """Bar chart of one number per body order (e.g. the invariant kernel between a molecule and its rotated copy)."""
    nus = sorted(int(k) for k in values)
    vals = [float(values[nu]) for nu in nus]
    fig = go.Figure(go.Bar(
        x=[body_order_label(nu, short=True) for nu in nus], y=vals, marker_color=[body_order_color(nu) for nu in nus],
        text=[f"{v:.6f}" for v in vals], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}<br>%{y:.10g}<extra></extra>",
    ))
    fig.update_xaxes(title="body order ν")
    top = max([abs(v) for v in vals] or [1.0])
    fig.update_yaxes(title=y_label, range=[min(0.0, min(vals or [0])) * 1.2, 1.2 * top if top > 0 else 1])
    return _style(fig, title=title, legend=False)


def vector_kernel_block(block: np.ndarray, *, title: str | None = None, zmax: float | None = None) -> go.Figure:
    """Annotated 3×3 heatmap of a λ=1 kernel block K_ab (Cartesian x, y, z), symmetric colour scale.

    Parameters
    ----------
    block : ndarray of shape (3, 3)
    title : str, optional
    zmax : float, optional
        Colour-scale limit; fix it across slider moves so only the pattern changes, not the scale.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    block = np.asarray(block, dtype=float).reshape(3, 3)
    zmax = float(zmax) if zmax else float(np.max(np.abs(block)) or 1.0)
    axes = ["x", "y", "z"]
    fig = go.Figure(go.Heatmap(
        z=block, x=axes, y=axes, zmin=-zmax, zmax=zmax, colorscale="RdBu", reversescale=True,
        # two decimals, short axis titles and the colour bar under the cells: in a half column at a 1,000 px window
        # a bar beside them left the cells too narrow for their numbers
        text=[[f"{v:+.2f}" for v in row] for row in block], texttemplate="%{text}", textfont=dict(size=FONT_SIZE - 1),
        colorbar=dict(title=dict(text="K_ab / max|K|", side="top"), orientation="h", thickness=10, y=-0.3,
                      yanchor="top", len=1.0, tickvals=[-zmax, 0.0, zmax], tickformat=".2g"),
        hovertemplate="R·A component %{y}, A component %{x}<br>%{z:.4g}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="a (rotated R·A)", scaleanchor="x", automargin=True)
    fig.update_xaxes(title="b (reference A)", side="bottom", automargin=True)
    fig = _style(fig, title=title, legend=False, height=470)
    fig.update_layout(margin=dict(l=60, r=10, b=130), title_font_size=FONT_SIZE + 1)
    return fig
