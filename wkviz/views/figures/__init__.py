"""Figures: pure functions from results to plotly figures.

Every function here takes plain data (numpy arrays, pandas tables, ase structures) and returns a
``plotly.graph_objects.Figure`` (or the table behind one); none of them computes a kernel or fits a model, and
none imports streamlit. The app calls them; so can a notebook or a script.

The modules follow the subjects: :mod:`.style` (colours, labels, the house layout), :mod:`.kernels`,
:mod:`.models`, :mod:`.curves` (learning curves, and stored ones beside them), :mod:`.maps` (kernel PCA, histograms) and :mod:`.cost`.
Every public name is importable from here, so ``figures.parity_plot(...)`` works whichever module holds it.

Colours are one vocabulary across the product: body order ν has one colour everywhere
(:data:`BODY_ORDER_COLORS`), the mixed kernel is black, the composition baseline (ν=0) grey.

Downloads (PNG, CSV, extended XYZ, chemiscope and configuration JSON) live in :mod:`wkviz.views.export`; their
names are re-exported here for one release so old imports keep working. The reproducing command line moved to
:func:`wkviz.cli.reproduce.cli_command` (views sit below the CLI in the flow, so it is not re-exported here).
"""

from __future__ import annotations

from ..export import (
    chemiscope_json,
    config_json,
    figure_png,
    png_export_status,
    predictions_extxyz,
    structures_extxyz,
    table_csv,
)
from .cost import body_order_picture, cost_vs_nu, feature_count_plot, route_cost_by_basis, route_cost_by_nu
from .curves import learning_curve_plot, learning_curve_slopes, stored_curve_plot
from .kernels import (
    body_order_spectrum,
    distance_by_nu,
    kernel_heatmap,
    kernel_heatmaps,
    kernel_values_by_nu,
    normalized_kernel,
    spectrum_table,
    vector_kernel_block,
)
from .maps import histogram
from .models import (COMPONENT_NAMES, energy_conservation, error_by_group, force_parity, model_comparison,
                     paired_difference_chart, parity_plot, weights_bar)
from .style import (
    BODY_ORDER_COLORS,
    FONT_SIZE,
    MIXED_COLOR,
    STORED_COLOR,
    TEMPLATE,
    body_order_color,
    body_order_label,
    model_color,
    model_label,
    model_nu,
)

__all__ = [
    "BODY_ORDER_COLORS",
    "MIXED_COLOR",
    "STORED_COLOR",
    "FONT_SIZE",
    "TEMPLATE",
    "COMPONENT_NAMES",
    "body_order_color",
    "body_order_label",
    "model_color",
    "model_label",
    "model_nu",
    "normalized_kernel",
    "kernel_heatmap",
    "kernel_heatmaps",
    "spectrum_table",
    "body_order_spectrum",
    "parity_plot",
    "force_parity",
    "energy_conservation",
    "learning_curve_slopes",
    "learning_curve_plot",
    "stored_curve_plot",
    "error_by_group",
    "model_comparison",
    "paired_difference_chart",
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
    # re-exported for one release: wkviz.views.export is their home
    "png_export_status",
    "figure_png",
    "table_csv",
    "structures_extxyz",
    "predictions_extxyz",
    "chemiscope_json",
    "config_json",
]
