"""Cost figures: time, memory and feature counts against body order and basis size, and the home page's
body-order picture (Wigner kernels linear in ν, explicit features exponential).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import FONT_SIZE, MIXED_COLOR, _axis_title, _style, body_order_color

__all__ = [
    "cost_vs_nu",
    "route_cost_by_nu",
    "route_cost_by_basis",
    "feature_count_plot",
    "body_order_picture",
]


def cost_vs_nu(table: pd.DataFrame, *, y: str = "seconds", title: str | None = None) -> go.Figure:
    """Cost against body order for one or more methods (log y).

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``nu``, ``method`` (optional; default one method) and ``y`` (``"seconds"``, ``"bytes"``,
        ``"features"``...); optional ``terms`` (multiply-adds per environment pair), labelled on the first
        method's points.
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
        # terms per pair (the Wigner program's multiply-adds): labelled on the first line, they show where the
        # cost steps up (the reduced schedule adds one Clebsch–Gordan step per two body orders)
        labelled = k == 0 and "terms" in group and group["terms"].notna().all()
        fig.add_trace(go.Scatter(
            x=group["nu"], y=group[y], mode="lines+markers+text" if labelled else "lines+markers", name=str(method),
            line=dict(color="#333" if k == 0 else "#888", dash=dashes[k % len(dashes)], width=2.5),
            marker=dict(size=13, color=[body_order_color(nu) for nu in group["nu"]], line=dict(width=1, color="#333")),
            text=[f"{int(t):,} term{'s' if int(t) != 1 else ''}" for t in group["terms"]] if labelled else None,
            textposition="top center", textfont=dict(size=FONT_SIZE - 3, color="#555"),
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
