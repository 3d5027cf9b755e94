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


def learning_curve_plot(
    table: pd.DataFrame,
    *,
    metric: str = "mae",
    unit: str | None = None,
    target: str = "target",
    title: str | None = None,
) -> go.Figure:
    """Log–log learning curves: mean over repeats as a line, ±1 std as error bars, slope in the legend; lines,
    markers and bars in the body-order colours (mixed black).

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
    for k, model in enumerate(models):
        group = table[table["model"] == model]
        stats = group.groupby("n_train")[metric].agg(["mean", "std", "count"]).reset_index()
        stats["std"] = stats["std"].fillna(0.0)
        color = model_color(model)
        is_mixed = model_nu(model) is None
        slope = slopes.get(model, float("nan"))
        name = model_label(model) + ("" if math.isnan(slope) else f"  (slope {slope:+.2f})")
        # ±1 std as error bars, each model nudged a little along the log x axis: shaded bands of five models
        # overlap into one grey blob at small training sizes
        x = stats["n_train"].to_numpy(float) * 10 ** (0.012 * (k - (len(models) - 1) / 2))
        mean = stats["mean"].to_numpy(float)
        std = stats["std"].to_numpy(float)
        below = np.minimum(std, 0.95 * mean)  # a log axis cannot go to zero
        spread = bool((stats["count"] > 1).any())
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="lines+markers", name=name, legendgroup=str(model),
            line=dict(color=color, width=4 if is_mixed else 2.5, dash="solid" if model_nu(model) != 0 else "dot"),
            marker=dict(size=9 if is_mixed else 7, color=color, line=dict(width=1, color="white")),
            error_y=dict(type="data", symmetric=False, array=std, arrayminus=below, color=color, thickness=1.5,
                         width=4, visible=spread),
            customdata=np.stack([stats["n_train"], stats["std"], stats["count"]], axis=1),
            hovertemplate=(f"{model_label(model)}<br>n_train %{{customdata[0]}}<br>{metric.upper()} %{{y:.4g}}"
                           f" ± %{{customdata[1]:.2g}} {unit or ''}<br>%{{customdata[2]}} repeats<extra></extra>"),
        ))
    # ticks at the measured sizes, and only 2s and 5s between decades on y: plotly's default labels every digit
    sizes = sorted(int(n) for n in table["n_train"].unique())
    fig.update_xaxes(type="log", title="training structures (count, log scale)", tickvals=sizes,
                     ticktext=[f"{n:,}" for n in sizes])
    values = table[metric].to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        decades = range(int(np.floor(np.log10(values.min()))) - 1, int(np.ceil(np.log10(values.max()))) + 1)
        ticks = [m * 10.0 ** d for d in decades for m in (1, 2, 5)]
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:.3g}" for t in ticks])
    fig.update_yaxes(type="log", title=_axis_title(f"test {metric.upper()} of {target}", unit) + ", log scale")
    fig.update_layout(height=560, legend=dict(x=1.02, xanchor="left", y=1.0, yanchor="top"))
    return _style(fig, title=title or "Learning curves (mean ± std over repeats)")
