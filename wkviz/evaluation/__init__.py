"""Evaluation: metrics, grouped errors, learning curves, kernel-PCA projections and cost comparisons."""

from .learning import *  # noqa: F401,F403
