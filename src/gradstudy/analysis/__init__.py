"""Pure pandas on a ``Study``: statistics over seeds, convergence, per-layer profiles, theory
predictions from stored values, latency ratios. The names below are the analysis API."""

from gradstudy.analysis.convergence import (
    compare_cells,
    convergence_table,
    curves_of,
    final_accuracy,
    final_metrics,
    last_per_seed,
    loss_auc,
    steps_to_target,
)
from gradstudy.analysis.profiles import end_steps_text, gradient_table, phase_layers
from gradstudy.analysis.seeds import log_mean_ci, lower_median, mean_ci

__all__ = [
    "compare_cells",
    "convergence_table",
    "curves_of",
    "end_steps_text",
    "final_accuracy",
    "final_metrics",
    "gradient_table",
    "last_per_seed",
    "log_mean_ci",
    "loss_auc",
    "lower_median",
    "mean_ci",
    "phase_layers",
    "steps_to_target",
]
