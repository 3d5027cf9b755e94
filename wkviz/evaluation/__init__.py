"""Evaluation: metrics, grouped errors, learning curves, kernel-PCA projections and cost comparisons; stored
(measured once, shipped) learning curves in :mod:`.stored`; the Teach page's demos in :mod:`.teach`."""

from .learning import *  # noqa: F401,F403
