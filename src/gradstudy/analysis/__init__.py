"""Pure pandas on a ``Study``: seeds and intervals, convergence, gradient profiles, theory
predictions from stored values, latency ratios. The names below are the analysis API."""

from gradstudy.analysis.convergence import (
    compare_cells,
    convergence_table,
    curves_of,
    end_steps_text,
    final_metrics,
    gradient_table,
    log_mean_ci,
    loss_auc,
    lower_median,
    mean_ci,
    phase_layers,
    steps_to_target,
)

__all__ = [
    "compare_cells",
    "convergence_table",
    "curves_of",
    "end_steps_text",
    "final_metrics",
    "gradient_table",
    "log_mean_ci",
    "loss_auc",
    "lower_median",
    "mean_ci",
    "phase_layers",
    "steps_to_target",
]
