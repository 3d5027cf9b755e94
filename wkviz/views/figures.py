"""Figures and downloads: pure functions from results to plotly figures, bytes and reproducible commands.

Every function here takes plain data (numpy arrays, pandas tables, ase structures) and returns a
``plotly.graph_objects.Figure``, ``bytes`` or ``str``; none of them computes a kernel or fits a model, and
none imports streamlit. The app calls them; so can a notebook or a script.

Colours are one vocabulary across the product: body order ν has one colour everywhere
(:data:`BODY_ORDER_COLORS`), the mixed kernel is black, the composition baseline (ν=0) grey.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import shutil
import threading
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..evaluation.projection import cosine_normalize

__all__ = [
    "BODY_ORDER_COLORS",
    "MIXED_COLOR",
    "body_order_color",
    "body_order_label",
    "model_color",
    "model_label",
    "model_nu",
    "normalized_kernel",
    "kernel_distance",
    "kernel_heatmap",
    "kernel_heatmaps",
    "spectrum_table",
    "body_order_spectrum",
    "parity_plot",
    "learning_curve_slopes",
    "learning_curve_plot",
    "kpca_map",
    "error_by_group",
    "model_comparison",
    "cost_vs_nu",
    "route_cost_by_nu",
    "route_cost_by_basis",
    "feature_count_plot",
    "distance_by_nu",
    "kernel_values_by_nu",
    "vector_kernel_block",
    "histogram",
    "weights_bar",
    "body_order_picture",
    "png_export_status",
    "figure_png",
    "table_csv",
    "structures_extxyz",
    "predictions_extxyz",
    "chemiscope_json",
    "cli_command",
    "config_json",
]

# ---------------------------------------------------------------------------------------------------------------
# Colours and names
# ---------------------------------------------------------------------------------------------------------------

#: One colour per body order ν, used by every figure and the app's legends. ν=0 is the composition baseline
#: (grey, it is a baseline, not a body order), ν=2 (the SOAP-equivalent 3-body kernel) is green. Hues are
#: far apart and dark enough to stay distinct on a projector and in greyscale print (lightness decreases
#: with ν for ν=1..4).
BODY_ORDER_COLORS: dict[int, str] = {
    0: "#8c8c8c",
    1: "#4a90d9",
    2: "#2e9e4f",
    3: "#f08a24",
    4: "#c92a2a",
    5: "#7b4fc4",
    6: "#8c564b",
    7: "#d6449b",
    8: "#9a9a1f",
    9: "#1aa3b8",
    10: "#3d3d99",
    11: "#6b8e23",
    12: "#b8860b",
}
#: The mixed kernel Σ_ν c_ν K^ν.
MIXED_COLOR = "#111111"

FONT_SIZE = 16
TEMPLATE = "plotly_white"
# Plotly's hover labels and colour bars stay legible at this size on a 1080p projector.
_FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=FONT_SIZE, color="#222")


def body_order_color(nu: int) -> str:
    """Colour of body order ``nu`` (cycled past 12)."""
    nu = int(nu)
    return BODY_ORDER_COLORS.get(nu, BODY_ORDER_COLORS[1 + (nu - 1) % 12])


def body_order_label(nu: int, short: bool = False) -> str:
    """``"ν=2 · 3-body"``; ν=0 is the composition kernel."""
    nu = int(nu)
    if nu == 0:
        return "ν=0" if short else "ν=0 · composition"
    return f"ν={nu}" if short else f"ν={nu} · {nu + 1}-body"


_NU_PATTERN = re.compile(r"(?:^|[^a-z])(?:nu|ν)\s*[=_ ]?\s*(\d+)", re.IGNORECASE)


def model_nu(name: str) -> int | None:
    """Body order a model name refers to (``"nu=3"``, ``"ν=3"``, ``"nu3"``, ``"composition"`` → 0), or None."""
    text = str(name).strip()
    low = text.lower()
    if low in ("composition", "baseline", "nu=0", "ν=0") or low.startswith("composition"):
        return 0
    match = _NU_PATTERN.search(low)
    if match:
        return int(match.group(1))
    return None


def model_color(name: str) -> str:
    """Colour of a model by name: mixed → black, single-ν and composition → the body-order palette."""
    nu = model_nu(name)
    if nu is not None:
        return body_order_color(nu)
    return MIXED_COLOR


def model_label(name: str, short: bool = False) -> str:
    """Human label of a model name (``"nu=2"`` → ``"ν=2 · 3-body"``, ``"mixed"`` → ``"mixed Σ_ν c_ν K^ν"``)."""
    nu = model_nu(name)
    if nu is not None:
        return body_order_label(nu, short=short)
    if str(name).lower().startswith("mixed"):
        return "mixed" if short else "mixed Σ_ν c_ν K^ν"
    return str(name)


def _model_sort_key(name: str):
    nu = model_nu(name)
    # composition, ν=1, ν=2, …, then the mixed kernel: the order of wkviz.models.standard_models
    return (2, 0, str(name)) if nu is None else (1, nu, str(name))


def _axis_title(label: str, unit: str | None) -> str:
    return f"{label} ({unit})" if unit else label


def _style(fig: go.Figure, *, title: str | None = None, height: int | None = None, legend: bool = True) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        font=_FONT,
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=FONT_SIZE + 4)) if title else None,
        margin=dict(l=70, r=30, t=70 if title else 30, b=60),
        hoverlabel=dict(font_size=FONT_SIZE - 1),
        showlegend=legend,
        legend=dict(bgcolor="rgba(255,255,255,0.85)", bordercolor="#ddd", borderwidth=1),
    )
    if height:
        fig.update_layout(height=height)
    fig.update_xaxes(showline=True, linecolor="#444", mirror=True, ticks="outside", zeroline=False)
    fig.update_yaxes(showline=True, linecolor="#444", mirror=True, ticks="outside", zeroline=False)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------

def normalized_kernel(K: np.ndarray, diag_A: np.ndarray | None = None, diag_B: np.ndarray | None = None) -> np.ndarray:
    """Cosine-normalised kernel K(A,B)/√(K(A,A)K(B,B)), in [−1, 1] for a positive semi-definite kernel.

    Parameters
    ----------
    K : ndarray of shape (nA, nB)
    diag_A, diag_B : ndarray of shape (nA,) and (nB,), optional
        Self-kernels; by default the diagonal of a square ``K``.

    Returns
    -------
    ndarray of shape (nA, nB)
        Zero where a self-kernel is zero (an isolated atom has no ν ≥ 1 density).
    """
    return cosine_normalize(K, diag_A, diag_B)


def kernel_distance(k_ab: float, k_aa: float, k_bb: float) -> float:
    """Kernel-induced distance between normalised feature vectors, √(2 − 2 k_ab/√(k_aa k_bb)), in [0, 2]."""
    denom = math.sqrt(max(k_aa, 0.0) * max(k_bb, 0.0))
    if denom == 0.0:
        return 0.0 if k_aa == k_bb else float("nan")
    cos = min(max(k_ab / denom, -1.0), 1.0)
    return math.sqrt(max(2.0 - 2.0 * cos, 0.0))


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
    values = normalized_kernel(K) if normalize and K.shape[0] == K.shape[1] else K
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
        values = normalized_kernel(sub[nu]) if normalize and sub.shape[1] == sub.shape[2] else sub[nu]
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
        Kn = normalized_kernel(K[nu])
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
    "effective_rank": ("effective rank of the normalised K^ν", "independent directions"),
    "mean_similarity": ("mean cosine similarity between structures", "dimensionless"),
    "weight_share": ("share of the mixed model's kernel", "fraction"),
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
    fig.update_yaxes(title=_axis_title(label, unit), rangemode="tozero")
    if len(data):
        top = float(np.nanmax(data[quantity]))
        fig.update_yaxes(range=[0, top * 1.18 if top > 0 else 1])
    return _style(fig, title=title or "Body-order spectrum", legend=False)


def weights_bar(weights: Mapping[int, float], *, title: str = "Body-order weights c_ν") -> go.Figure:
    """Bar chart of the fitted body-order weights c_ν (log scale when they span decades)."""
    nus = sorted(int(k) for k in weights)
    values = [float(weights[nu]) for nu in nus]
    fig = go.Figure(go.Bar(
        x=[body_order_label(nu, short=True) for nu in nus], y=values,
        marker_color=[body_order_color(nu) for nu in nus],
        text=[f"{v:.2g}" for v in values], textposition="outside",
        hovertemplate="%{x}<br>c = %{y:.4g}<extra></extra>",
    ))
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
        fig.update_yaxes(type="log")
    fig.update_xaxes(title="body order ν")
    fig.update_yaxes(title="relative weight c_ν (dimensionless)")
    return _style(fig, title=title, legend=False)


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------

COMPONENT_NAMES = {1: ["x", "y", "z"], 3: ["x", "y", "z"]}


def parity_plot(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    ids: Sequence[int],
    formulas: Sequence[str] | None = None,
    target: str = "target",
    unit: str | None = None,
    sigma: np.ndarray | None = None,
    component_names: Sequence[str] | None = None,
    selected: Iterable[int] = (),
    title: str | None = None,
) -> go.Figure:
    """Predicted against true values, one trace per component, row ids in ``customdata``.

    Plotly's point indices are per trace, so every point carries ``customdata = [id, formula, error, component]``
    and a click/selection handler reads the structure id from there.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n,) or (n, n_components)
    ids : sequence of int, length n
        Structure (or atom) ids shown on hover and returned by selections.
    formulas : sequence of str, optional
    target, unit : str
        Name and unit of the target, used in axis titles.
    sigma : ndarray like ``y_pred``, optional
        Predictive standard deviation, drawn as error bars.
    component_names : sequence of str, optional
        Names of the columns of a multi-component target (default x, y, z for 3 components).
    selected : iterable of int
        Ids to ring (the structure shown in 3D).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"true and predicted values differ in shape: {y_true.shape} vs {y_pred.shape}")
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
        sigma = None if sigma is None else np.asarray(sigma, dtype=float)[:, None]
    elif sigma is not None:
        sigma = np.asarray(sigma, dtype=float).reshape(y_true.shape)
    n, n_comp = y_true.shape
    ids = np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} predictions")
    formulas = list(formulas) if formulas is not None else [""] * n
    if component_names is None:
        component_names = ["x", "y", "z"] if n_comp == 3 else [str(c) for c in range(n_comp)] if n_comp > 1 else [target]
    comp_colors = ["#c92a2a", "#2e9e4f", "#4a90d9", "#7b4fc4", "#f08a24", "#8c564b", "#d6449b", "#1aa3b8", "#9a9a1f"]
    selected = set(int(s) for s in selected)
    u = f" {unit}" if unit else ""
    fig = go.Figure()
    lo = float(np.nanmin([y_true.min(), y_pred.min()]))
    hi = float(np.nanmax([y_true.max(), y_pred.max()]))
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines",
                             line=dict(color="#888", dash="dash", width=1.5), name="y = x", hoverinfo="skip"))
    for c in range(n_comp):
        err = y_pred[:, c] - y_true[:, c]
        custom = np.empty((n, 4), dtype=object)
        custom[:, 0] = ids
        custom[:, 1] = formulas
        custom[:, 2] = err
        custom[:, 3] = c
        fig.add_trace(
            go.Scatter(
                x=y_true[:, c],
                y=y_pred[:, c],
                mode="markers",
                name=component_names[c] if n_comp > 1 else "test structures",
                marker=dict(size=9, color=comp_colors[c % len(comp_colors)] if n_comp > 1 else "#2f5d9e",
                            opacity=0.8, line=dict(width=0.5, color="white")),
                error_y=None if sigma is None else dict(type="data", array=sigma[:, c], visible=True,
                                                       thickness=1, width=0, color="rgba(60,60,60,0.35)"),
                customdata=custom,
                hovertemplate=(
                    "structure %{customdata[0]} · %{customdata[1]}<br>"
                    f"true %{{x:.4g}}{u}<br>predicted %{{y:.4g}}{u}<br>"
                    f"error %{{customdata[2]:+.3g}}{u}<extra>{component_names[c] if n_comp > 1 else ''}</extra>"
                ),
            )
        )
    if selected:
        mask = np.isin(ids.astype(int), list(selected))
        if mask.any():
            fig.add_trace(go.Scatter(
                x=y_true[mask].ravel(), y=y_pred[mask].ravel(), mode="markers", name="shown in 3D",
                marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=3, color="#f08a24")),
                hoverinfo="skip",
            ))
    mae = float(np.mean(np.abs(y_pred - y_true)))
    rmse = float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    fig.update_layout(height=560, legend=dict(x=0.02, xanchor="left", y=0.98, yanchor="top"))
    fig.update_xaxes(title=_axis_title(f"true {target}", unit), range=[lo - pad, hi + pad])
    fig.update_yaxes(title=_axis_title(f"predicted {target}", unit), range=[lo - pad, hi + pad], scaleanchor="x")
    # No dragmode here: Streamlit turns click-to-select off when dragmode is "select"/"lasso"; box and lasso
    # stay available from the mode bar.
    fig.update_layout(clickmode="event+select")
    return _style(fig, title=title or f"Parity: MAE {mae:.3g}{u}, RMSE {rmse:.3g}{u} (n = {n})")


def learning_curve_slopes(table: pd.DataFrame, metric: str = "mae") -> dict[str, float]:
    """Least-squares slope of log(error) against log(n_train) of the mean curve of each model.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``model, n_train, repeat, <metric>`` (the ``learning-curve`` CSV contract).
    metric : str

    Returns
    -------
    dict
        model → slope (NaN when fewer than two training sizes).
    """
    slopes = {}
    for model, group in table.groupby("model", sort=False):
        mean = group.groupby("n_train")[metric].mean()
        mean = mean[(mean > 0) & (mean.index > 0)]
        if len(mean) < 2:
            slopes[model] = float("nan")
            continue
        slope, _ = np.polyfit(np.log(mean.index.to_numpy(float)), np.log(mean.to_numpy(float)), 1)
        slopes[model] = float(slope)
    return slopes


def _hex_to_rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def learning_curve_plot(
    table: pd.DataFrame,
    *,
    metric: str = "mae",
    unit: str | None = None,
    target: str = "target",
    title: str | None = None,
) -> go.Figure:
    """Log–log learning curves: mean over repeats as a line, ±1 std as a band, slope in the legend.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``model, n_train, repeat, mae, rmse`` (the ``learning-curve`` CSV contract).
    metric : {"mae", "rmse"}
    unit, target : str
        For the y-axis title.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    slopes = learning_curve_slopes(table, metric)
    fig = go.Figure()
    models = sorted(table["model"].unique(), key=_model_sort_key)
    for model in models:
        group = table[table["model"] == model]
        stats = group.groupby("n_train")[metric].agg(["mean", "std", "count"]).reset_index()
        stats["std"] = stats["std"].fillna(0.0)
        color = model_color(model)
        is_mixed = model_nu(model) is None
        slope = slopes.get(model, float("nan"))
        name = model_label(model) + ("" if math.isnan(slope) else f"  (slope {slope:+.2f})")
        x = stats["n_train"].to_numpy(float)
        lo = np.clip(stats["mean"] - stats["std"], stats["mean"] * 0.05, None).to_numpy(float)
        hi = (stats["mean"] + stats["std"]).to_numpy(float)
        if (stats["count"] > 1).any():
            fig.add_trace(go.Scatter(
                x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                fillcolor=_hex_to_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip",
                showlegend=False, legendgroup=str(model),
            ))
        fig.add_trace(go.Scatter(
            x=x, y=stats["mean"], mode="lines+markers", name=name, legendgroup=str(model),
            line=dict(color=color, width=4 if is_mixed else 2.5, dash="solid" if model_nu(model) != 0 else "dot"),
            marker=dict(size=8 if is_mixed else 6),
            customdata=np.stack([stats["std"], stats["count"]], axis=1),
            hovertemplate=(f"{model_label(model)}<br>n_train %{{x}}<br>{metric.upper()} %{{y:.4g}}"
                           f" ± %{{customdata[0]:.2g}} {unit or ''}<br>%{{customdata[1]}} repeats<extra></extra>"),
        ))
    fig.update_xaxes(type="log", title="training structures (count, log scale)")
    fig.update_yaxes(type="log", title=_axis_title(f"test {metric.upper()} of {target}", unit) + ", log scale")
    fig.update_layout(height=560, legend=dict(x=1.02, xanchor="left", y=1.0, yanchor="top"))
    return _style(fig, title=title or "Learning curves (mean ± std over repeats)")


def error_by_group(
    table: pd.DataFrame,
    *,
    group: str,
    group_label: str,
    unit: str | None = None,
    target: str = "target",
    title: str | None = None,
) -> go.Figure:
    """Bar chart of the MAE per group (molecule size, element...) with the number of predictions on hover.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per group with columns ``group``, ``mae`` and ``n`` (optionally ``rmse``), e.g. the rows of
        :func:`wkviz.evaluation.errors_by_size` / :func:`wkviz.evaluation.errors_by_element`.
    group : str
        Column holding the group labels.
    group_label : str
        Axis title of the groups, with its unit (e.g. ``"atoms per structure (count)"``).
    unit, target, title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    x = table[group].astype(str)
    custom = np.stack([table["n"].to_numpy(), table["rmse"].to_numpy() if "rmse" in table else
                       np.full(len(table), np.nan)], axis=1)
    fig = go.Figure(go.Bar(
        x=x, y=table["mae"], marker_color="#2f5d9e", customdata=custom,
        text=[f"n={int(n)}" for n in table["n"]], textposition="outside", cliponaxis=False,
        hovertemplate=(f"{group_label} %{{x}}<br>MAE %{{y:.4g}} {unit or ''}<br>RMSE %{{customdata[1]:.4g}}"
                       f" {unit or ''}<br>%{{customdata[0]}} structures<extra></extra>"),
    ))
    fig.update_xaxes(title=group_label, type="category")
    top = float(table["mae"].max()) if len(table) else 1.0
    fig.update_yaxes(title=_axis_title(f"MAE of {target}", unit), range=[0, 1.2 * top if top > 0 else 1])
    return _style(fig, title=title, legend=False)


def model_comparison(table: pd.DataFrame, *, metric: str = "mae", unit: str | None = None, target: str = "target",
                     title: str | None = None) -> go.Figure:
    """Test error of every model (composition, each ν, mixed) as bars in the body-order colours.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``model`` and ``metric`` (model names as in :func:`wkviz.models.standard_models`).
    metric : str
    unit, target, title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    table = table.copy()
    table["_order"] = [_model_sort_key(m) for m in table["model"]]
    table = table.sort_values("_order")
    labels = [model_label(m, short=True) for m in table["model"]]
    values = table[metric].to_numpy(float)
    fig = go.Figure(go.Bar(
        x=labels, y=values, marker_color=[model_color(m) for m in table["model"]],
        text=[f"{v:.3g}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}<br>" + metric.upper() + f" %{{y:.4g}} {unit or ''}<extra></extra>",
    ))
    positive = values[values > 0]
    if len(positive) and positive.max() / positive.min() > 30:
        fig.update_yaxes(type="log")
    else:
        fig.update_yaxes(range=[0, 1.2 * float(np.nanmax(values)) if len(values) else 1])
    fig.update_xaxes(title="model (ν=0: composition only)")
    fig.update_yaxes(title=_axis_title(f"test {metric.upper()} of {target}", unit))
    return _style(fig, title=title or "Models compared on the same split", legend=False)


# ---------------------------------------------------------------------------------------------------------------
# Maps and teaching figures
# ---------------------------------------------------------------------------------------------------------------

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


def cost_vs_nu(table: pd.DataFrame, *, y: str = "seconds", title: str | None = None) -> go.Figure:
    """Cost against body order for one or more methods (log y): Wigner kernels are linear in ν.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``nu``, ``method`` (optional; default one method) and ``y`` (``"seconds"``, ``"bytes"``,
        ``"features"``...).
    y : str
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    units = {"seconds": ("wall time", "s"), "bytes": ("memory", "bytes"), "features": ("features per environment", "count"),
             "n_pairs": ("environment pairs", "count")}
    label, unit = units.get(y, (y, None))
    table = table.copy()
    if "method" not in table:
        table["method"] = "Wigner kernel"
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot"]
    for k, (method, group) in enumerate(table.groupby("method", sort=False)):
        group = group.sort_values("nu")
        fig.add_trace(go.Scatter(
            x=group["nu"], y=group[y], mode="lines+markers", name=str(method),
            line=dict(color="#333" if k == 0 else "#888", dash=dashes[k % len(dashes)], width=2.5),
            marker=dict(size=13, color=[body_order_color(nu) for nu in group["nu"]], line=dict(width=1, color="#333")),
            hovertemplate=f"{method}<br>ν=%{{x}}<br>{label} %{{y:.4g}} {unit or ''}<extra></extra>",
        ))
    fig.update_xaxes(title="maximum body order ν_max", dtick=1)
    fig.update_yaxes(title=_axis_title(label, unit) + ", log scale", type="log")
    return _style(fig, title=title or f"{label.capitalize()} against body order")


# Routes of the body-order cost comparison (wkviz.evaluation.scaling): the Wigner kernel as on the Home page's schematic
# (black, solid, markers in the body-order colours), explicit features grey and dashed.
_ROUTE_STYLE = {
    "wigner": dict(line=dict(color=MIXED_COLOR, width=3.5), marker_symbol="circle"),
    "features": dict(line=dict(color="#7a7a7a", width=2.5, dash="dash"), marker_symbol="square"),
}
_COST_QUANTITIES = {
    "seconds": ("wall time", "s"),
    "peak_bytes": ("peak memory", "MB"),
    "features": ("invariant features per environment", "count"),
}


def _route_kind(route: str) -> str:
    return "features" if "feature" in str(route).lower() else "wigner"


def _stopped_marker(fig, x, text, *, log_x: bool = False):
    """A dotted vertical line at data position ``x`` with a label above the plot."""
    # shapes take data values on a log axis, annotations the log10 of them (plotly's convention)
    fig.add_vline(x=x, line=dict(color="#b02a2a", width=2, dash="dot"))
    fig.add_annotation(x=math.log10(x) if log_x else x, y=1.0, xref="x", yref="paper", yanchor="bottom",
                       xanchor="center", text=text, showarrow=False, font=dict(color="#b02a2a", size=FONT_SIZE - 1))


def _level_line(fig, y, text, *, color, dash, log_y: bool = True):
    """A horizontal line at data value ``y`` of a log y axis, labelled just below its right end."""
    fig.add_hline(y=y, line=dict(color=color, width=2, dash=dash))
    fig.add_annotation(x=1.0, xref="paper", xanchor="right", y=math.log10(y) if log_y else y, yref="y",
                       yanchor="top", text=text, showarrow=False, font=dict(color=color, size=FONT_SIZE - 2),
                       bgcolor="rgba(255,255,255,0.8)")


def _log_axis(fig, values, *, min_decades: float = 2.0, top_pad: float = 0.15) -> None:
    """Log y axis spanning at least ``min_decades`` around the data, with readable ticks.

    Timings of a few structures differ by tens of per cent from run to run; on a log axis zoomed onto them that
    noise would look like a trend, so the axis never zooms in further than ``min_decades``. Up to three decades
    get plain labels at 1-2-5 steps (0.05, 0.1, 0.2 …), wider ranges one power of ten per tick.
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], dtype=float)
    if not len(v):
        return
    lo, hi = math.log10(v.min()), math.log10(v.max())
    pad = max(0.15, 0.04 * (hi - lo), (min_decades - (hi - lo)) / 2)
    span = hi - lo + 2 * pad
    ticks = dict(dtick="D2", tickformat="~g") if span <= 3.2 else dict(dtick=1 if span <= 9 else 2,
                                                                        exponentformat="power", tickformat="")
    fig.update_yaxes(type="log", range=[lo - pad, hi + max(pad, top_pad)], **ticks)


def _legend_below(fig: go.Figure, height: int = 520) -> go.Figure:
    """Legend in a row under the x axis: cost curves fill every corner of their plot, so a legend inside would
    hide points (the comparison charts sit two to a row)."""
    fig.update_layout(height=height, legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.2, yanchor="top",
                                                 bordercolor="rgba(0,0,0,0)"),
                      margin=dict(b=130))
    return fig


def _sci(value: float) -> str:
    """``12,576`` below 10⁵, ``2.7×10⁷`` above (plotly text, superscript exponent)."""
    if value < 1e5:
        return f"{value:,.0f}"
    exp = int(math.floor(math.log10(value)))
    return f"{value / 10**exp:.1f}×10<sup>{exp}</sup>"


def route_cost_by_nu(table: pd.DataFrame, quantity: str = "seconds", *, budget: float | None = None,
                     title: str | None = None) -> go.Figure:
    """Cost of the Wigner-kernel and explicit-feature routes against body order ν (log y).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per (ν, route), as :attr:`wkviz.evaluation.scaling.CostComparison.body_order`: columns ``nu``, ``route``,
        ``status`` ("measured"/"stopped"), ``seconds``, ``peak_bytes``, ``estimate_bytes``, ``note``.
    quantity : {"seconds", "peak_bytes"}
        Wall time, or peak memory (shown in MB; stopped feature runs appear as their estimate, hollow).
    budget : float, optional
        Memory budget in bytes of the feature route: a horizontal line on the memory chart.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    label, unit = _COST_QUANTITIES[quantity]
    scale = 2.0**20 if quantity == "peak_bytes" else 1.0
    fig = go.Figure()
    first_stop = None
    for route, group in table.groupby("route", sort=False):
        kind = _route_kind(route)
        group = group.sort_values("nu")
        ok = group[group["status"] == "measured"]
        style = _ROUTE_STYLE[kind]
        fig.add_trace(go.Scatter(
            x=ok["nu"], y=ok[quantity].astype(float) / scale, mode="lines+markers", name=str(route),
            line=style["line"],
            marker=dict(size=13, symbol=style["marker_symbol"], color=[body_order_color(nu) for nu in ok["nu"]],
                        line=dict(width=1.2, color="#333")),
            hovertemplate=f"{route}<br>ν=%{{x}}<br>{label} %{{y:.3g}} {unit}<extra></extra>",
        ))
        stopped = group[group["status"] == "stopped"]
        if len(stopped):
            first_stop = int(stopped["nu"].min())
            if quantity == "peak_bytes":
                tail = pd.concat([ok.tail(1).assign(estimate_bytes=ok.tail(1)[quantity]), stopped])
                fig.add_trace(go.Scatter(
                    x=tail["nu"], y=tail["estimate_bytes"].astype(float) / scale, mode="lines+markers",
                    name=f"{route}: estimate, not run", line=dict(color=style["line"]["color"], width=2, dash="dot"),
                    marker=dict(size=12, symbol=f"{style['marker_symbol']}-open", color="#b02a2a"),
                    hovertemplate=f"{route} (not run)<br>ν=%{{x}}<br>would need %{{y:.3g}} {unit}<extra></extra>",
                ))
    if budget is not None and quantity == "peak_bytes":
        _level_line(fig, budget / scale, f"memory budget of the features: {budget / scale:,.0f} {unit}",
                    color="#b02a2a", dash="dash")
    if first_stop is not None and quantity == "seconds":
        _stopped_marker(fig, first_stop - 0.5, f"features stopped from ν={first_stop}")
    fig.update_xaxes(title="body order ν (all orders up to ν computed)", dtick=1)
    fig.update_yaxes(title=_axis_title(label, unit) + ", log scale", type="log", exponentformat="power")
    if quantity == "seconds":
        _log_axis(fig, table["seconds"].astype(float).tolist())
    else:
        shown = [v / scale for v in table["peak_bytes"].tolist() + table["estimate_bytes"].tolist()
                 if v is not None and np.isfinite(v)] + ([budget / scale] if budget else [])
        _log_axis(fig, shown)
    fig = _style(fig, title=title or f"{label.capitalize()} against body order")
    return _legend_below(fig)


def route_cost_by_basis(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Wall time of both routes against the radial basis size at one ν (log–log), plus the basis-free route.

    Parameters
    ----------
    table : pandas.DataFrame
        As :attr:`wkviz.evaluation.scaling.CostComparison.basis`: columns ``n_radial`` (largest functions per l; missing for
        the basis-free route), ``n_radial_per_l``, ``route``, ``status``, ``seconds``, ``note``, ``nu``.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = go.Figure()
    finite = table[table["n_radial"].notna()]
    xs = sorted(float(x) for x in finite["n_radial"].unique())
    first_stop = None
    for route, group in finite.groupby("route", sort=False):
        kind = _route_kind(route)
        style = _ROUTE_STYLE[kind]
        ok = group[group["status"] == "measured"].sort_values("n_radial")
        fig.add_trace(go.Scatter(
            x=ok["n_radial"].astype(float), y=ok["seconds"].astype(float), mode="lines+markers", name=str(route),
            line=style["line"], marker=dict(size=12, symbol=style["marker_symbol"], color=style["line"]["color"]),
            customdata=ok["n_radial_per_l"],
            hovertemplate=f"{route}<br>radial functions per l %{{customdata}}<br>%{{y:.3g}} s<extra></extra>",
        ))
        stopped = group[group["status"] == "stopped"]
        if len(stopped):
            first_stop = float(stopped["n_radial"].min())
    for _, row in table[table["n_radial"].isna()].iterrows():
        fig.add_trace(go.Scatter(
            x=[xs[0], xs[-1]] if xs else [1, 2], y=[float(row["seconds"])] * 2, mode="lines", name=str(row["route"]),
            line=dict(color=MIXED_COLOR, width=2, dash="dot"),
            hovertemplate=f"{row['route']}<br>%{{y:.3g}} s<extra></extra>"))
    if first_stop is not None:
        below = [x for x in xs if x < first_stop]
        x = math.sqrt(below[-1] * first_stop) if below else first_stop / 1.5
        _stopped_marker(fig, x, "features stopped (memory budget)", log_x=True)
    nu = int(table["nu"].iloc[0]) if "nu" in table and len(table) else None
    fig.update_xaxes(title="radial functions per l, n (count, log scale)", type="log", tickvals=xs,
                     ticktext=[f"{x:g}" for x in xs])
    fig.update_yaxes(title="wall time (s), log scale", type="log")
    _log_axis(fig, table["seconds"].astype(float).tolist())
    fig = _style(fig, title=title or (f"Time against radial basis size at ν={nu}" if nu else "Time against basis size"))
    return _legend_below(fig)


def feature_count_plot(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Invariant features per environment of the explicit route against ν, one line per basis (log y).

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``nu``, ``basis`` (a label) and ``features`` (counts, as
        :attr:`wkviz.evaluation.scaling.CostComparison.feature_counts`).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = go.Figure()
    greys = ["#7a7a7a", "#333333", "#b0b0b0"]
    for k, (basis, group) in enumerate(table.groupby("basis", sort=False)):
        group = group.sort_values("nu")
        fig.add_trace(go.Scatter(
            x=group["nu"], y=group["features"].astype(float), mode="lines+markers+text", name=str(basis),
            line=dict(color=greys[k % len(greys)], width=2.5, dash="dash"),
            marker=dict(size=12, symbol="square", color=[body_order_color(nu) for nu in group["nu"]],
                        line=dict(width=1.2, color="#333")),
            text=[_sci(v) for v in group["features"].astype(float)],
            textposition="top left", textfont=dict(size=FONT_SIZE - 3, color=greys[k % len(greys)]),
            hovertemplate=f"{basis}<br>ν=%{{x}}<br>%{{y:,.0f}} features per environment<extra></extra>",
        ))
    fig.update_xaxes(title="body order ν", dtick=1, range=[0.6, table["nu"].max() + 0.4])
    fig.update_yaxes(title="features per environment (count), log")
    _log_axis(fig, table["features"].astype(float).tolist(), top_pad=1.2)
    fig.update_traces(cliponaxis=False)
    fig = _style(fig, title=title or "Explicit features: size of one environment's descriptor")
    return _legend_below(fig)


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
        text=[[f"{v:+.3f}" for v in row] for row in block], texttemplate="%{text}", textfont=dict(size=FONT_SIZE + 2),
        colorbar=dict(title=dict(text="K_ab / max|K(A,A)|", side="right")),
        hovertemplate="row %{y}, column %{x}<br>%{z:.4g}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="rotated molecule: component a", scaleanchor="x")
    fig.update_xaxes(title="reference molecule: component b", side="bottom")
    fig = _style(fig, title=title, legend=False, height=430)
    fig.update_layout(margin=dict(l=60, r=10))
    return fig


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


def body_order_picture(nu_max: int = 4, basis_size: int = 8) -> go.Figure:
    """The home page's picture: a ν-kernel sees (ν+1)-body correlations; its cost grows linearly with ν.

    Top: for ν = 1…``nu_max`` a central atom (dark) and ν neighbours, their mutual correlations as dotted lines.
    Bottom: a schematic of cost against ν on a log axis — linear for Wigner kernels, ``basis_size``^ν for
    explicit body-ordered features (products of ν density-coefficient vectors).

    Parameters
    ----------
    nu_max : int
    basis_size : int
        Radial × chemical basis functions per angular channel assumed by the schematic.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = make_subplots(rows=2, cols=1, row_heights=[0.42, 0.58], vertical_spacing=0.16,
                        subplot_titles=["<b>body order ν</b> = correlations of ν neighbours with the centre",
                                        "<b>cost</b> against ν (schematic)"])
    spacing = 3.2
    for nu in range(1, nu_max + 1):
        x0 = spacing * (nu - 1)
        color = body_order_color(nu)
        angles = np.pi / 2 + 2 * np.pi * np.arange(nu) / nu + (np.pi / 2 if nu == 2 else 0.0)
        nx = x0 + 1.05 * np.cos(angles)
        ny = 1.05 * np.sin(angles)
        for k in range(nu):
            fig.add_trace(go.Scatter(x=[x0, nx[k]], y=[0, ny[k]], mode="lines", line=dict(color=color, width=3),
                                     hoverinfo="skip", showlegend=False), row=1, col=1)
            for m in range(k + 1, nu):
                fig.add_trace(go.Scatter(x=[nx[k], nx[m]], y=[ny[k], ny[m]], mode="lines",
                                         line=dict(color=color, width=2, dash="dot"), hoverinfo="skip",
                                         showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=nx, y=ny, mode="markers", marker=dict(size=17, color=color,
                                 line=dict(width=1.5, color="white")), hoverinfo="skip", showlegend=False),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=[x0], y=[0], mode="markers", marker=dict(size=24, color="#333",
                                 line=dict(width=2, color="white")), hoverinfo="skip", showlegend=False),
                      row=1, col=1)
        fig.add_annotation(x=x0, y=-1.75, text=f"<b>ν={nu}</b> · {nu + 1}-body", showarrow=False,
                           font=dict(color=color, size=FONT_SIZE), row=1, col=1)
    fig.update_xaxes(visible=False, range=[-1.6, spacing * (nu_max - 1) + 1.6], row=1, col=1)
    fig.update_yaxes(visible=False, range=[-2.1, 1.45], row=1, col=1)
    nus = np.arange(1, nu_max + 3)
    fig.add_trace(go.Scatter(x=nus, y=float(basis_size) ** (nus - 1), mode="lines+markers",
                             name=f"explicit features ∝ {basis_size}^ν", line=dict(color="#888", width=2.5, dash="dash"),
                             marker=dict(size=8, color="#888")), row=2, col=1)
    fig.add_trace(go.Scatter(x=nus, y=nus / nus[0], mode="lines+markers", name="Wigner kernel ∝ ν",
                             line=dict(color=MIXED_COLOR, width=4),
                             marker=dict(size=12, color=[body_order_color(n) for n in nus],
                                         line=dict(width=1, color="#333"))), row=2, col=1)
    fig.update_xaxes(title_text="body order ν", dtick=1, row=2, col=1)
    fig.update_yaxes(title_text="relative cost (log)", type="log", row=2, col=1)
    fig = _style(fig, height=560)
    fig.update_layout(legend=dict(x=0.02, xanchor="left", y=0.46, yanchor="top"), margin=dict(t=40, l=70, r=20))
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------------------------

_BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
_PNG_LOCK = threading.Lock()


def _find_browser() -> str | None:
    env = os.environ.get("BROWSER_PATH")
    if env and os.path.exists(env):
        return env
    for path in _BROWSER_CANDIDATES:
        if os.path.exists(path):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_export_status() -> tuple[bool, str]:
    """Whether :func:`figure_png` can work here, and why not.

    kaleido ≥ 1 renders through a Chrome/Chromium it finds via the ``BROWSER_PATH`` environment variable or
    the usual install locations; we point it at the system Chromium and never let it download one.

    Returns
    -------
    (bool, str)
        ``(True, path_of_browser)`` or ``(False, reason)``.
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG export needs the kaleido package (pip install kaleido); CSV downloads still work."
    browser = _find_browser()
    if browser is None:
        return False, ("PNG export needs Chrome or Chromium (e.g. apt-get install chromium); "
                       "CSV downloads and the chart's camera button still work.")
    return True, browser


def figure_png(fig: go.Figure, *, width: int = 1200, height: int = 700, scale: float = 2.0) -> bytes:
    """Render a figure to PNG bytes with kaleido and the system Chromium.

    Raises
    ------
    RuntimeError
        When no browser or kaleido is available (message says what to install).
    """
    ok, info = png_export_status()
    if not ok:
        raise RuntimeError(info)
    os.environ.setdefault("BROWSER_PATH", info)
    # One render at a time: each call starts a headless browser, and concurrent sessions would race on it.
    with _PNG_LOCK:
        return fig.to_image(format="png", width=width, height=height, scale=scale)


def table_csv(table: pd.DataFrame) -> bytes:
    """CSV bytes of a table (UTF-8, no index)."""
    return table.to_csv(index=False).encode("utf-8")


def structures_extxyz(frames) -> bytes:
    """Extended-XYZ bytes of structures, with their ``info`` and ``arrays`` (the exact input of a CLI call)."""
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, list(frames), format="extxyz")
    return buf.getvalue().encode("utf-8")


def predictions_extxyz(frames, key: str, predictions: np.ndarray, *, sigma: np.ndarray | None = None,
                       per_atom: bool = False) -> bytes:
    """Extended-XYZ bytes of structures with predictions stored as ``<key>_predicted`` (and ``_std``).

    Parameters
    ----------
    frames : sequence of ase.Atoms
        The predicted structures (copied, not modified).
    key : str
        Target name.
    predictions : ndarray of shape (n,), (n, 3), (n, 3, 3), or (total_atoms,) when ``per_atom``
    sigma : ndarray like ``predictions``, optional
    per_atom : bool
        Store in ``arrays`` (one value per atom) instead of ``info``.

    Returns
    -------
    bytes
    """
    import ase.io

    predictions = np.asarray(predictions, dtype=float)
    sigma = None if sigma is None else np.asarray(sigma, dtype=float)
    out = []
    start = 0
    for i, atoms in enumerate(frames):
        atoms = atoms.copy()
        if per_atom:
            n = len(atoms)
            atoms.arrays[f"{key}_predicted"] = predictions[start:start + n]
            if sigma is not None:
                atoms.arrays[f"{key}_std"] = sigma[start:start + n]
            start += n
        else:
            value = predictions[i]
            atoms.info[f"{key}_predicted"] = value.tolist() if np.ndim(value) else float(value)
            if sigma is not None:
                s = sigma[i]
                atoms.info[f"{key}_std"] = s.tolist() if np.ndim(s) else float(s)
        out.append(atoms)
    buf = io.StringIO()
    ase.io.write(buf, out, format="extxyz")
    return buf.getvalue().encode("utf-8")


def chemiscope_json(
    frames,
    properties: Mapping[str, Mapping],
    *,
    name: str = "wkviz map",
    description: str = "",
    environments: Sequence[tuple[int, int]] | None = None,
    cutoff: float | None = None,
    x: str | None = None,
    y: str | None = None,
    color: str | None = None,
) -> bytes:
    """A chemiscope dataset (JSON) of a map: structures, per-structure or per-atom properties, settings.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    properties : mapping name → ``{"target": "structure"|"atom", "values": array, "units": str,
        "description": str}``
    name, description : str
        Metadata shown by chemiscope.
    environments : sequence of (structure, atom), optional
        Environments an ``"atom"`` property refers to, in order; required for per-atom maps.
    cutoff : float, optional
        Cutoff radius of the environments, Å.
    x, y, color : str, optional
        Property names for chemiscope's initial map axes and colour.

    Returns
    -------
    bytes
        UTF-8 JSON that chemiscope.io and ``chemiscope.show`` load.
    """
    structures = []
    for atoms in frames:
        s = {
            "size": len(atoms),
            "names": atoms.get_chemical_symbols(),
            "x": atoms.positions[:, 0].tolist(),
            "y": atoms.positions[:, 1].tolist(),
            "z": atoms.positions[:, 2].tolist(),
        }
        if atoms.pbc.any():
            s["cell"] = atoms.cell.array.ravel().tolist()
        structures.append(s)
    props = {}
    for key, prop in properties.items():
        values = np.asarray(prop["values"])
        entry = {"target": prop.get("target", "structure"),
                 "values": values.tolist() if np.issubdtype(values.dtype, np.number) else [str(v) for v in values]}
        if prop.get("units"):
            entry["units"] = prop["units"]
        if prop.get("description"):
            entry["description"] = prop["description"]
        props[key] = entry
    data = {"meta": {"name": name, "description": description}, "structures": structures, "properties": props}
    if environments is not None:
        data["environments"] = [{"structure": int(s), "center": int(a), "cutoff": float(cutoff or 0.0)}
                                for s, a in environments]
    settings = {}
    if x or y or color:
        settings["map"] = {k: {"property": v} for k, v in (("x", x), ("y", y), ("color", color)) if v}
    if settings:
        data["settings"] = settings
    return json.dumps(data).encode("utf-8")


_FLAG_NAMES = {
    "nu_max": "--nu-max",
    "lambda_max": "--lambda-max",
    "cutoff": "--cutoff",
    "cutoff_width": "--cutoff-width",
    "density_width": "--density-width",
    "density_scaling": "--density-scaling",
    "radial_scale": "--radial-scale",
    "radial_exponent": "--radial-exponent",
    "species_coupling": "--species-coupling",
    "hydrogen_weight": "--hydrogen-weight",
    "hydrogen_center_weight": "--hydrogen-center-weight",
    "schedule": "--schedule",
    "normalization": "--normalization",
    "nu1_route": "--nu1-route",
}


def cli_command(subcommand: str, hypers=None, *args: str, **options) -> str:
    """The ``python -m wkviz ...`` command line that reproduces a result (DESIGN.md §3).

    Parameters
    ----------
    subcommand : {"kernels", "fit", "learning-curve", ...}
    hypers : wkviz.Hypers, optional
        Every hyperparameter flag is written out, defaults included, so the command does not depend on
        defaults that might change.
    *args : str
        Positional arguments (input files).
    **options
        ``name=value`` → ``--name value`` (underscores become dashes); ``True`` → bare flag; ``None``/``False``
        omitted; lists are joined with commas.

    Returns
    -------
    str
    """
    parts = ["python", "-m", "wkviz", subcommand, *[str(a) for a in args]]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    if hypers is not None:
        for field, flag in _FLAG_NAMES.items():
            value = getattr(hypers, field)
            if value is None:  # written out: an omitted flag would mean the (possibly non-None) default
                parts += [flag, "none"]
                continue
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def config_json(**sections) -> str:
    """Pretty, key-sorted JSON of a page's configuration (hypers as dicts, arrays as lists)."""

    def convert(obj):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (np.integer,)):
            return int(obj)
        if isinstance(obj, (np.floating,)):
            return float(obj)
        raise TypeError(f"cannot write {type(obj).__name__} to JSON")

    return json.dumps(sections, indent=2, sort_keys=True, default=convert)
