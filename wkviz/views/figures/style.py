"""The figures' one visual vocabulary: body-order colours and labels, model names, fonts and the house layout.

Body order ν has one colour everywhere (:data:`BODY_ORDER_COLORS`), the mixed kernel is black, the
composition baseline (ν=0) grey. Every figure of :mod:`wkviz.views.figures` goes through :func:`_style`.
"""

from __future__ import annotations

import re

import plotly.graph_objects as go

__all__ = [
    "BODY_ORDER_COLORS",
    "MIXED_COLOR",
    "STORED_COLOR",
    "FONT_SIZE",
    "TEMPLATE",
    "body_order_color",
    "body_order_label",
    "model_nu",
    "model_color",
    "model_label",
]


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
#: A stored (measured once, shipped with wkviz) result drawn beside the user's own: a slate grey, darker and bluer
#: than the composition baseline's, always dashed with diamond markers, so it never reads as one of the user's models.
STORED_COLOR = "#5b6675"

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


#: Characters of a title line: a figure in a column of a 1,000 px window is about 300 px wide (~30 characters of
#: the 20 px title font), where a longer line was clipped (and ran under the plotly toolbar at the top right).
TITLE_WIDTH = 28


def wrap_title(text: str, width: int = TITLE_WIDTH) -> str:
    """``text`` broken into lines of at most ``width`` characters at spaces (plotly titles do not wrap)."""
    lines, line = [], ""
    for word in str(text).split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "<br>".join(lines)


def _style(fig: go.Figure, *, title: str | None = None, height: int | None = None, legend: bool = True) -> go.Figure:
    title = wrap_title(title) if title else None
    n_lines = title.count("<br>") + 1 if title else 0
    fig.update_layout(
        template=TEMPLATE,
        font=_FONT,
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=FONT_SIZE + 4)) if title else None,
        margin=dict(l=70, r=30, t=50 + 26 * n_lines if title else 30, b=60),
        hoverlabel=dict(font_size=FONT_SIZE - 1),
        showlegend=legend,
        legend=dict(bgcolor="rgba(255,255,255,0.85)", bordercolor="#ddd", borderwidth=1),
    )
    if height:
        fig.update_layout(height=height)
    fig.update_xaxes(showline=True, linecolor="#444", mirror=True, ticks="outside", zeroline=False)
    fig.update_yaxes(showline=True, linecolor="#444", mirror=True, ticks="outside", zeroline=False)
    return fig
