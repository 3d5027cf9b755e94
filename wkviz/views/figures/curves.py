"""Learning curves: log–log error against training-set size, and their slopes; a stored (measured once, shipped
with wkviz) curve beside the user's own (:class:`wkviz.evaluation.stored.StoredCurve`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ...evaluation.stored import StoredCurve
from .style import STORED_COLOR, _axis_title, _model_sort_key, _style, model_color, model_label, model_nu

__all__ = [
    "learning_curve_slopes",
    "learning_curve_plot",
    "stored_curve_plot",
]

#: Units whose errors read better in thousandths (a QM9 U0 MAE of 0.026 eV is quoted as 26 meV).
_MILLI = {"eV": "meV"}


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


def _slope(n, err) -> float:
    ok = (np.asarray(n) > 0) & (np.asarray(err) > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(n, float)[ok]), np.log(np.asarray(err, float)[ok]), 1)[0])


def _stored_trace(reference: StoredCurve, metric: str) -> go.Scatter:
    """The stored curve in its own style: dashed slate grey, diamond markers, its provenance in the hover."""
    mean, std = reference.errors(metric)
    milli = _MILLI.get(reference.unit)
    shown, shown_unit = (1000.0 * mean, milli) if milli else (mean, reference.unit)
    slope = _slope(reference.n_train, mean)
    # the label on two lines: at full length it would double the width of the legend beside the user's curves
    name = reference.label.replace(" (", "<br>(", 1) + ("" if math.isnan(slope) else f"  (slope {slope:+.2f})")
    # wall time grows with the load of a shared machine; the CPU time, when recorded, is the comparable figure
    fit = [(f"{w:,.0f} s" if math.isfinite(w) else "not recorded") + (f" ({c:,.0f} s CPU)" if math.isfinite(c) else "")
           for w, c in zip(reference.fit_seconds, reference.fit_cpu_seconds)]
    load = [f" at load {text.split()[0]}" if text else "" for text in reference.load]
    custom = np.empty((len(mean), 5), dtype=object)
    custom[:, 0] = [f"{n:,}" for n in reference.n_train]
    custom[:, 1] = [f"{m:,}" for m in reference.n_active]
    custom[:, 2] = shown
    custom[:, 3] = fit
    custom[:, 4] = load
    return go.Scatter(
        x=reference.n_train.astype(float), y=mean, mode="lines+markers", name=name, legendgroup="stored",
        line=dict(color=STORED_COLOR, width=2.5, dash="dash"),
        marker=dict(symbol="diamond", size=10, color=STORED_COLOR, line=dict(width=1, color="white")),
        error_y=dict(type="data", symmetric=False, array=std, arrayminus=np.minimum(std, 0.95 * mean),
                     color=STORED_COLOR, thickness=1.5, width=4, visible=bool((reference.n_repeats > 1).any())),
        customdata=custom,
        hovertemplate=(f"{reference.label}<br>n_train %{{customdata[0]}}<br>M %{{customdata[1]}} active environments"
                       f"<br>{metric.upper()} %{{customdata[2]:{'.1f' if milli else '.4g'}}} {shown_unit}"
                       f"<br>fit %{{customdata[3]}}%{{customdata[4]}} (kernels not included)"
                       f"<br>{reference.n_test:,} test structures, measured {reference.date}<extra></extra>"),
    )


def _log_axes(fig: go.Figure, sizes, values, *, metric: str, target: str, unit: str | None) -> None:
    # ticks at the measured sizes, and only 2s and 5s between decades on y: plotly's default labels every digit
    sizes = sorted({int(n) for n in sizes})
    fig.update_xaxes(type="log", title="training structures (count, log scale)", tickvals=sizes,
                     ticktext=[f"{n:,}" for n in sizes])
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        decades = range(int(np.floor(np.log10(values.min()))) - 1, int(np.ceil(np.log10(values.max()))) + 1)
        ticks = [m * 10.0 ** d for d in decades for m in (1, 2, 5)]
        if sum(values.min() <= t <= values.max() for t in ticks) < 2:  # a narrow range (one stored curve): every digit
            ticks = [m * 10.0 ** d for d in decades for m in range(1, 10)]
        fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:.3g}" for t in ticks])
    fig.update_yaxes(type="log", title=_axis_title(f"test {metric.upper()} of {target}", unit) + ", log scale")


def learning_curve_plot(
    table: pd.DataFrame,
    *,
    metric: str = "mae",
    unit: str | None = None,
    target: str = "target",
    title: str | None = None,
    reference: StoredCurve | None = None,
) -> go.Figure:
    """Log–log learning curves: mean over repeats as a line, ±1 std as error bars, slope in the legend; lines,
    markers and bars in the body-order colours (mixed black). Optionally a stored curve on the same axes.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``model, n_train, repeat, mae, rmse`` (the ``learning-curve`` CSV contract).
    metric : {"mae", "rmse"}
    unit, target : str
        For the y-axis title.
    title : str, optional
    reference : StoredCurve, optional
        A stored curve drawn beside the user's (dashed slate grey, diamonds). Only for errors of the same quantity
        in the same unit (:meth:`StoredCurve.comparable_to`); otherwise draw it apart with
        :func:`stored_curve_plot`.

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    ValueError
        ``reference`` is in another unit than ``unit``: one axis cannot show both.
    """
    if reference is not None and (unit or "") != reference.unit:
        raise ValueError(f"the stored curve is in {reference.unit} and this one in {unit or 'no unit'}; draw it "
                         "apart with stored_curve_plot.")
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
    sizes, values = list(table["n_train"].unique()), list(table[metric].to_numpy(float))
    if reference is not None:
        fig.add_trace(_stored_trace(reference, metric))
        sizes += list(reference.n_train)
        values += list(reference.errors(metric)[0])
    _log_axes(fig, sizes, values, metric=metric, target=target, unit=unit)
    # the legend under the axes: beside them, its seven long entries (slopes, the stored curve) took two thirds
    # of the width of a 1,000 px window and squeezed the axes to a sliver. Anchored to the bottom of the figure
    # (not of the axes), so rotated tick labels and the axis title never run into it when it wraps on narrow screens
    fig.update_layout(height=700, legend=dict(orientation="h", x=0.0, xanchor="left", y=0.0, yanchor="bottom",
                                              yref="container"))
    fig = _style(fig, title=title or "Learning curves (mean ± std over repeats)")
    fig.update_layout(margin=dict(b=260))  # room for the legend wrapped on up to seven rows
    return fig


def stored_curve_plot(reference: StoredCurve, *, metric: str = "mae", title: str | None = None,
                      height: int = 460) -> go.Figure:
    """A stored learning curve on its own axes (log–log, in its own unit), in the style it has beside the user's
    curves: for before the user has a curve, or beside one of another quantity, where only slopes compare.

    Parameters
    ----------
    reference : StoredCurve
    metric : {"mae", "rmse"}
    title : str, optional
    height : int
        Pixels; smaller than the main learning-curve figure.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = go.Figure(_stored_trace(reference, metric))
    _log_axes(fig, reference.n_train, reference.errors(metric)[0], metric=metric, target=reference.target,
              unit=reference.unit)
    fig.update_layout(height=height, legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.28, yanchor="top"))
    fig = _style(fig, title=title or "Stored learning curve (measured once)")
    fig.update_layout(margin=dict(b=110))  # room for the legend under the x-axis title
    return fig
