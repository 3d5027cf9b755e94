"""Learning curves: log–log error against training-set size, and their slopes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import _axis_title, _model_sort_key, _style, model_color, model_label, model_nu

__all__ = [
    "learning_curve_slopes",
    "learning_curve_plot",
]


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
