"""Figure specifications: what a figure is called, what it shows, what data it needs and which cells it draws.

The report and every paper's reproduction draw through the same ``FigureSpec``, so a figure whose
data is absent is skipped with a one-line reason instead of failing or coming out empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradstudy.analysis.predictions import Predictions
from gradstudy.cells.spectrum import SPECTRUM_QUANTITY
from gradstudy.schema import HIST_QUANTITIES
from gradstudy.show import plots
from gradstudy.store.study import Study, where_text

#: The channels a figure that compares cells takes from the user; a per-cell figure (one panel per
#: cell, coloured by layer or value) takes only the panel channels.
ALL_CHANNELS = ("hue", "style", "col", "row", "wrap")
PANEL_CHANNELS = ("col", "row", "wrap")
#: What each table holds, for the reason a figure is skipped.
NEEDS_TEXT = {
    "curves": "no evaluations",
    "layers": "no layer statistics (stats=none)",
    "hists": "no histograms (they need stats=full)",
    "spectra": "no Jacobian spectrum (stats.extra=[jacobian_spectrum])",
}


@dataclass(frozen=True)
class FigureSpec:
    """A figure of a study.

    ``tables`` must have rows and, when given, at least one of the layer ``stats`` must be recorded.
    ``where`` picks the cells to draw (``Study.select``); ``options`` are fixed keyword arguments of
    ``draw``; ``channels`` are the encoding options a caller may pass on.
    """

    name: str
    caption: str
    draw: Callable[..., plots.Plot]
    tables: tuple[str, ...] = ("curves",)
    stats: tuple[str, ...] = ()
    where: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] = ALL_CHANNELS
    #: ``draw`` takes ``predictions=``: the theory's predictions, computed once per report.
    uses_predictions: bool = False
    #: The histogram quantities the figure draws, one of which must have rows (empty: any).
    quantities: tuple[str, ...] = ()

    def cells(self, study: Study) -> Study:
        """The complete cells this figure draws."""
        return study.select(**self.where) if self.where else study.complete()

    def missing(self, study: Study) -> str | None:
        """Why this figure cannot be drawn from ``study``, or None when it can."""
        try:
            chosen = self.cells(study)
        except KeyError as err:
            return str(err.args[0])
        if chosen.cells.empty:
            wanted = where_text(dict(self.where))
            return f"no complete cell{' with ' + wanted if wanted else ''}"
        for table in self.tables:
            if getattr(chosen, table).empty:
                return NEEDS_TEXT.get(table, f"no {table} rows")
        if self.quantities and not chosen.hists["quantity"].isin(self.quantities).any():
            return NEEDS_TEXT["spectra" if SPECTRUM_QUANTITY in self.quantities else "hists"]
        if self.stats and not chosen.layers["stat"].isin(self.stats).any():
            return f"none of {', '.join(self.stats)} recorded (see stats.tier and stats.extra)"
        return None

    def render(self, study: Study, predictions: Predictions | None = None, **encoding: Any) -> plots.Plot:
        """Draw the figure from ``study``'s chosen cells; ``encoding`` options outside ``channels`` are
        ignored. ``predictions`` (the whole study's) go to a figure that ``uses_predictions``."""
        passed = {k: v for k, v in encoding.items() if k in self.channels and v is not None}
        if self.uses_predictions and predictions is not None:
            passed["predictions"] = predictions
        return self.draw(self.cells(study), **self.options, **passed)


def steps_figure(target: float, metric: str = "accuracy", split: str = "test") -> FigureSpec:
    """The steps-to-target figure for one target."""
    return FigureSpec(
        "steps_to_target",
        f"Steps until {split} {metric} reaches {target}: each seed (● reached, ▷ never, ✕ diverged first, ⊘ collapsed first), the lower median with its "
        "bootstrap 95% CI, and the fraction of seeds not there yet.",
        plots.steps_to_target_figure,
        ("curves",),
        options={"target": target, "metric": metric, "split": split},
    )


#: The report's figures after the steps-to-target figure, in order.
REPORT_FIGURES = (
    FigureSpec(
        "learning_curves",
        "Training loss and test accuracy against step: mean over seeds with a 95% t band, taken on the log scale for the "
        "loss and the logit scale for the accuracy so that it stays above 0 and inside [0, 1] (fewer than 3 seeds: the "
        "seeds themselves); ✕ where a seed diverged, ⊘ where one collapsed.",
        plots.learning_curves,
    ),
    FigureSpec(
        "gradient_profile",
        "Std of the back-propagated gradient δ and the weight-gradient norm per layer at the start and the end "
        "(geometric mean over the seeds that trained to the end; diverged seeds dotted, each at its last healthy step): "
        "a slope means vanishing or exploding gradients.",
        plots.gradient_profile,
        ("layers",),
        ("delta_std", "grad_norm"),
        uses_predictions=True,
    ),
    FigureSpec(
        "activation_profile",
        "Mean and std of the activations per layer at the start and the end (diverged seeds dotted, each at its last "
        "healthy step): whether the signal keeps its scale through depth (SELU's fixed point is mean 0, std 1).",
        plots.activation_profile,
        ("layers",),
        ("act_mean", "act_std"),
        uses_predictions=True,
    ),
    FigureSpec(
        "branch_profile",
        "Residual branches per block at the start and the end: the std of the branch a·F(x) and its ratio to the std "
        "of the stream it joins (small: the block starts near the identity; batch norm makes it fall like 1/√block).",
        plots.branch_profile,
        ("layers",),
        ("branch_std", "branch_ratio"),
        uses_predictions=True,
    ),
    FigureSpec(
        "grad_norm_heatmap",
        "Weight-gradient norm by layer and step, one panel per cell; hatched after a seed diverged.",
        plots.grad_norm_heatmap,
        ("layers",),
        ("grad_norm",),
        channels=PANEL_CHANNELS,
    ),
    FigureSpec(
        "activations",
        "Mean and std of each layer's activations over training, one panel per cell, one line per layer.",
        plots.activation_over_training,
        ("layers",),
        ("act_mean", "act_std"),
        channels=PANEL_CHANNELS,
    ),
    FigureSpec(
        "saturation",
        "Saturated (bounded activations) and dead (ReLU) fractions per layer over training.",
        plots.saturation_over_training,
        ("layers",),
        ("saturated_frac", "dead_frac"),
        channels=PANEL_CHANNELS,
    ),
    FigureSpec(
        "mean_shift",
        "Median over units of each unit's mean activation per layer over training (the mean shift ELUs reduce).",
        plots.unit_mean_median_over_training,
        ("layers",),
        ("unit_mean_median",),
        channels=PANEL_CHANNELS,
    ),
    FigureSpec(
        "histograms",
        "Histograms of activations and of δ per layer at the recorded steps (full statistics tier).",
        plots.layer_histograms,
        ("hists",),
        channels=PANEL_CHANNELS,
        quantities=HIST_QUANTITIES,
    ),
    FigureSpec(
        "jacobian_spectrum",
        "Squared singular values σ² of each layer's input-output Jacobian ∂h_l/∂x at the start and the end: their "
        "mean and their spread (variance / mean²), with the free-probability prediction dashed at the start "
        "(Pennington et al. 2017). Dynamical isometry keeps the mean at 1 and the spread small at every depth.",
        plots.spectrum_profile,
        ("spectra",),
    ),
    FigureSpec(
        "jacobian_spectrum_density",
        "Density of the last hidden layer's σ² at each measured step (exact method, fixed log bins): a narrow peak "
        "near 1 is isometry, a spread over decades its absence.",
        plots.spectrum_density,
        ("hists",),
        quantities=(SPECTRUM_QUANTITY,),
    ),
    FigureSpec(
        "preactivation_percentiles",
        "15th/50th/85th percentiles of the first and last layers' pre-activation over training.",
        plots.preactivation_percentiles,
        ("layers",),
        ("z_p15", "z_p50", "z_p85"),
        channels=PANEL_CHANNELS,
    ),
)
