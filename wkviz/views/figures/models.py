"""Model figures: parity (of the target or of what the kernels learned beyond the composition baseline), fitted
body-order weights, error by group, models compared on one split, and paired differences over repeated splits.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import _axis_title, _model_sort_key, _style, body_order_color, body_order_label, model_color, model_label

__all__ = [
    "COMPONENT_NAMES",
    "parity_plot",
    "weights_bar",
    "error_by_group",
    "model_comparison",
    "paired_difference_chart",
    "force_parity",
    "energy_conservation",
]


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
    baseline: np.ndarray | None = None,
) -> go.Figure:
    """Predicted against true values, one trace per component, row ids in ``customdata``.

    With ``baseline`` (the composition baseline of the same entries, fitted on the training set:
    :func:`wkviz.evaluation.composition_baseline`) both axes show the value minus it, and say so: total energies
    span thousands of eV while the errors are fractions of one, so against the baseline the scatter shows what the
    kernels learned. The errors are unchanged.

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
    baseline : ndarray like ``y_true``, optional
        Subtracted from both true and predicted values (the axis titles say "− baseline").

    Returns
    -------
    plotly.graph_objects.Figure
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"true and predicted values differ in shape: {y_true.shape} vs {y_pred.shape}")
    if baseline is not None:
        baseline = np.asarray(baseline, dtype=float)
        if baseline.shape != y_true.shape:
            raise ValueError(f"the baseline has shape {baseline.shape}, the values {y_true.shape}")
        y_true, y_pred = y_true - baseline, y_pred - baseline
        # "composition baseline" made the axis titles longer than a figure in a 1,000 px window's column
        target = f"{target} − baseline"
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
        # one label per decade: plotly's default labels the 2s and 5s of every decade too, which crowd into
        # each other on a chart this small
        fig.update_yaxes(type="log", dtick=1, exponentformat="power", minor=dict(ticks="outside", ticklen=3))
    fig.update_xaxes(title="body order ν")
    fig.update_yaxes(title="relative weight c_ν (dimensionless)")
    return _style(fig, title=title, legend=False)


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


def paired_difference_chart(paired, *, unit: str | None = None, target: str = "target", metric: str = "MAE",
                            title: str | None = None) -> go.Figure:
    """Paired difference of every model's test error to a reference model, with ±1 standard error bars.

    Parameters
    ----------
    paired : pandas.DataFrame or list of dict
        Rows of :meth:`wkviz.evaluation.compare.Comparison.paired`: ``model``, ``reference``, ``mean``, ``se``,
        ``n``, ``wins``, ``losses``, ``verdict``. The reference's own row (difference 0) is left out.
    unit, target : str
    metric : str
        Name of the compared error, for the labels.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
        One bar per model (body-order colours), negative = better than the reference; hover: mean ± se, the
        number of splits each side wins, and the verdict (a difference within 2 se is a tie). When some models
        are more than 10× further off than the median (composition, typically), the axis shows the close ones
        and the bars cut off carry their value.
    """
    table = pd.DataFrame(list(paired) if not isinstance(paired, pd.DataFrame) else paired)
    reference = str(table["reference"].iloc[0]) if len(table) else ""
    table = table[table["model"] != reference].copy()
    table["_order"] = [_model_sort_key(m) for m in table["model"]]
    table = table.sort_values("_order")
    ref_label = model_label(reference, short=True) if reference else "reference"
    verdicts = {"better": "better than " + ref_label, "worse": ref_label + " better", "tie": "tie (within 2 se)",
                "n/a": "one split: no standard error"}
    se = table["se"].to_numpy(float)
    custom = np.stack([table["wins"].to_numpy(), table["losses"].to_numpy(), table["n"].to_numpy(),
                       [verdicts.get(v, v) for v in table["verdict"]], np.where(np.isfinite(se), se, np.nan)],
                      axis=1) if len(table) else np.zeros((0, 5))
    u = f" {unit}" if unit else ""
    fig = go.Figure(go.Bar(
        x=[model_label(m, short=True) for m in table["model"]], y=table["mean"].to_numpy(float),
        marker_color=[model_color(m) for m in table["model"]],
        error_y=dict(type="data", array=np.nan_to_num(se), visible=True, thickness=1.5, color="#333"),
        customdata=custom,
        hovertemplate=("%{x} − " + ref_label + "<br>" + metric + " difference %{y:+.3g} ± %{customdata[4]:.2g}" + u
                       + "<br>wins %{customdata[0]} of %{customdata[2]} splits, " + ref_label
                       + " wins %{customdata[1]}<br>%{customdata[3]}<extra></extra>"),
    ))
    fig.add_hline(y=0.0, line=dict(color="#888", width=1.5, dash="dash"))
    # The composition model is typically 100× further off than the rest, which would flatten the differences
    # that matter (a few meV between body orders): zoom on the close models and label the bars cut off.
    means = table["mean"].to_numpy(float)
    extent = np.abs(means) + np.nan_to_num(se)
    med = float(np.median(extent)) if len(extent) else 0.0
    far = extent > 10.0 * med if med > 0 else np.zeros(len(extent), bool)
    if far.any() and (~far).sum() >= 1 and extent[~far].max() > 0:
        lim = 1.35 * float(extent[~far].max())
        fig.update_yaxes(range=[-lim, lim])
        for label, mean in zip(np.array([model_label(m, short=True) for m in table["model"]])[far], means[far]):
            fig.add_annotation(x=label, y=np.sign(mean) * 0.9 * lim, text=f"{mean:+.3g}{u} (off scale)",
                               showarrow=False, font=dict(size=12, color="#333"), bgcolor="rgba(255,255,255,0.85)")
    fig.update_traces(text=[f"{m:+.2g}" for m in means], textposition="outside", cliponaxis=True)
    fig.update_xaxes(title="model (ν=0: composition only)")
    fig.update_yaxes(title=_axis_title(f"test {metric} of {target} − {ref_label}'s (paired)", unit))
    n = int(table["n"].max()) if len(table) else 0
    return _style(fig, title=title or f"Paired difference to {ref_label} over {n} splits (±1 se; negative: better)",
                  legend=False)


def force_parity(
    forces_true,
    forces_pred,
    *,
    mode: str = "components",
    structure_ids: Sequence[int] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Predicted against true forces (eV/Å): each Cartesian component (one trace per x, y, z) or the magnitude |F|
    of each atom's force; MAE and RMSE of what is plotted in the title.

    Parameters
    ----------
    forces_true, forces_pred : ndarray of shape (n_atoms, 3), or lists of (n_atoms_i, 3) arrays (one per structure)
    mode : {"components", "norm"}
        Per Cartesian component, or |F| per atom.
    structure_ids : sequence of int, optional
        The structure of each atom (``customdata[0]`` of every point, shown on hover and returned by selections);
        default: the structure's position in the lists (or 0 for one array).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    if mode not in ("components", "norm"):
        raise ValueError(f"mode must be 'components' or 'norm', got {mode!r}")

    def stack(f):
        if isinstance(f, np.ndarray) and f.ndim == 2:
            return np.asarray(f, dtype=float), np.zeros(len(f), dtype=int)
        arrs = [np.asarray(a, dtype=float).reshape(-1, 3) for a in f]
        return (np.concatenate(arrs) if arrs else np.zeros((0, 3)),
                np.repeat(np.arange(len(arrs)), [len(a) for a in arrs]))

    ft, owner = stack(forces_true)
    fp, _ = stack(forces_pred)
    if ft.shape != fp.shape or ft.ndim != 2 or ft.shape[1] != 3:
        raise ValueError(f"true and predicted forces must both be (n_atoms, 3); got {ft.shape} and {fp.shape}")
    if structure_ids is not None:
        owner = np.asarray(structure_ids, dtype=int)
        if len(owner) != len(ft):
            raise ValueError(f"{len(owner)} structure ids for {len(ft)} atoms")
    atom = np.concatenate([np.arange(c) for c in np.unique(owner, return_counts=True)[1]]) if len(owner) else owner
    if mode == "norm":
        xs, ys, names = [np.linalg.norm(ft, axis=1)], [np.linalg.norm(fp, axis=1)], ["|F| per atom"]
        colors, label = ["#2f5d9e"], "|F|"
    else:
        xs, ys, names = [ft[:, c] for c in range(3)], [fp[:, c] for c in range(3)], ["F_x", "F_y", "F_z"]
        colors, label = ["#c92a2a", "#2e9e4f", "#4a90d9"], "force component"
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    err = y_all - x_all
    mae = float(np.mean(np.abs(err))) if len(err) else float("nan")
    rmse = float(np.sqrt(np.mean(err ** 2))) if len(err) else float("nan")
    lo = float(min(x_all.min(), y_all.min())) if len(err) else 0.0
    hi = float(max(x_all.max(), y_all.max())) if len(err) else 1.0
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines",
                             line=dict(color="#888", dash="dash", width=1.5), name="y = x", hoverinfo="skip"))
    for x, y, name, color in zip(xs, ys, names, colors):
        custom = np.stack([owner, atom, y - x], axis=1)
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=name, customdata=custom,
            marker=dict(size=6, color=color, opacity=0.6, line=dict(width=0)),
            hovertemplate=("structure %{customdata[0]:d}, atom %{customdata[1]:d}<br>true %{x:.3f} eV/Å<br>"
                           f"predicted %{{y:.3f}} eV/Å<br>error %{{customdata[2]:+.3f}} eV/Å<extra>{name}</extra>")))
    fig.update_layout(height=520, legend=dict(x=0.02, xanchor="left", y=0.98, yanchor="top"))
    fig.update_xaxes(title=_axis_title(f"true {label}", "eV/Å"), range=[lo - pad, hi + pad])
    fig.update_yaxes(title=_axis_title(f"predicted {label}", "eV/Å"), range=[lo - pad, hi + pad], scaleanchor="x")
    what = "per component" if mode == "components" else "of |F|"
    return _style(fig, title=title or f"Forces {what}: MAE {mae:.3g} eV/Å, RMSE {rmse:.3g} eV/Å (n = {len(err)})")


def energy_conservation(runs: Mapping[str, Mapping[str, np.ndarray]], *, title: str | None = None) -> go.Figure:
    """Total, potential and kinetic energy against time of one or more MD runs, each as its change since t = 0 (so
    the exchange between kinetic and potential energy and the much smaller wobble of the total share one axis, and
    runs on different potentials can be compared); the drift of the total energy (linear slope, eV/ps) of each run
    in the legend.

    Parameters
    ----------
    runs : mapping
        ``name → {"time_fs", "kinetic", "potential"}`` (arrays in fs and eV, e.g. from
        :func:`wkviz.calculator.run_md`); ``"total"`` is kinetic + potential when absent.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    run_colors = ["#2f5d9e", "#c92a2a", "#2e9e4f", "#7b4fc4"]
    dashes = {"total": "solid", "potential": "dash", "kinetic": "dot"}
    fig = go.Figure()
    for k, (name, run) in enumerate(runs.items()):
        t = np.asarray(run["time_fs"], dtype=float)
        parts = {"kinetic": np.asarray(run["kinetic"], dtype=float),
                 "potential": np.asarray(run["potential"], dtype=float)}
        if any(len(v) != len(t) for v in parts.values()):
            raise ValueError(f"run {name!r}: the energies and the times differ in length")
        parts["total"] = np.asarray(run["total"], dtype=float) if "total" in run else parts["kinetic"] + parts["potential"]
        drift = float(np.polyfit(t / 1000.0, parts["total"], 1)[0]) if len(t) > 1 else 0.0
        color = run_colors[k % len(run_colors)]
        for part in ("total", "potential", "kinetic"):
            label = f"{name}: total (drift {drift:+.3g} eV/ps)" if part == "total" else f"{name}: {part}"
            fig.add_trace(go.Scatter(
                x=t, y=parts[part] - (parts[part][0] if len(t) else 0.0), mode="lines", name=label,
                line=dict(color=color, dash=dashes[part], width=2.5 if part == "total" else 1.5),
                hovertemplate=f"{name}, {part}<br>t %{{x:.1f}} fs<br>%{{y:.4f}} eV<extra></extra>"))
    fig.update_layout(height=460)
    fig.update_xaxes(title=_axis_title("time", "fs"))
    fig.update_yaxes(title=_axis_title("change since t = 0", "eV"))
    return _style(fig, title=title or "Energy conservation (NVE)")
