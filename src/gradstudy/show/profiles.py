"""Figures across layers: gradient, activation and variance profiles at the start and the end,
with the mean-field prediction dashed where it applies."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gradstudy import analysis
from gradstudy.analysis.predictions import Predictions, predicted_layers
from gradstudy.analysis.profiles import Phase
from gradstudy.cells.statistics import summary_of
from gradstudy.schema import KEY
from gradstudy.show.encoding import (
    WRAP,
    Keys,
    encode,
)
from gradstudy.show.lines import APART, line_figure
from gradstudy.show.plot import (
    OVERLAY_TEXT,
    PanelRow,
    Plot,
    layer_label,
)
from gradstudy.store.study import Study

#: What a profile's dashed lines are, unless the figure says otherwise.
MEAN_FIELD = "mean-field prediction at step 0 (gradstudy.theory)"


def profile(
    study: Study,
    stats: Sequence[tuple[str, str, bool]],
    title: str,
    hue: Keys,
    style: Keys,
    col: Keys,
    row: Keys,
    wrap: int,
    predictions: Predictions | None,
    theory: str = MEAN_FIELD,
    legend: str = OVERLAY_TEXT,
) -> Plot:
    """Rows: each stat at the start and at the end (``analysis.phase_layers``); x: layer. The
    start rows carry the prediction (by default the mean-field one, ``gradstudy.analysis.predictions``)
    dashed, where it applies; ``theory`` says what it is."""
    phased = analysis.phase_layers(study)
    phased = phased[phased["stat"].isin([s for s, _, _ in stats])]
    # a diverged seed's profile at its last healthy step shares the end panels, drawn apart, never pooled
    shown_phase = phased["phase"].replace({Phase.EARLY.value: Phase.END.value})
    data = phased.assign(measure=phased["stat"] + "@" + shown_phase, **{APART: phased["ended_early"]})
    when = {
        Phase.START: "start (step 0)",
        Phase.END: "end (seeds that trained to it)" if phased["ended_early"].any() else "end",
    }
    measures = [
        PanelRow(f"{stat}@{phase}", f"{label}\n{when[phase]}", log, summary_of(stat))
        for phase in (Phase.START, Phase.END)
        for stat, label, log in stats
    ]
    enc = encode(study, data, hue, style, col, row, wrap)
    predicted = predicted_layers(study) if predictions is None else predictions.of(study)
    overlay = predicted.layers[predicted.layers["stat"].isin([s for s, _, _ in stats])]
    overlay = overlay.assign(measure=overlay["stat"] + "@" + Phase.START)
    plot = line_figure(
        study,
        data,
        measures,
        "layer",
        layer_label(study),
        title,
        enc,
        divergence=None,
        integer_x=True,
        overlay=overlay,
        overlay_text=legend,
    )
    plot.notes.append(
        f"Lines: geometric mean over seeds of positive magnitudes (band: the 95% t interval of the logs, mapped back), "
        f"mean otherwise (95% t band; on the logit scale for fractions). "
        f"End: {analysis.end_steps_text(phased)}."
    )
    plot.notes.extend(prediction_notes(predicted, overlay, theory))
    normed = study.cells.merge(overlay[KEY].drop_duplicates(), on=KEY)
    if (normed["norm"] == "batchnorm").any():
        plot.notes.append(
            "Under batch norm the prediction is the large-batch limit (Yang et al. 2019 for ReLU); at small batches "
            "δ grows slightly faster towards the input than drawn."
        )
    collapsed = study.cells[study.cells["n_collapsed"] > 0]
    if len(collapsed):
        plot.notes.append(
            f"{int(collapsed['n_collapsed'].sum())} seed(s) of {len(collapsed)} cell(s) collapsed (⊘ in the figures "
            "over steps): they trained to the end and are pooled in it, where their exact zeros show as ▽."
        )
    return plot


def prediction_notes(predicted: Predictions, overlay: pd.DataFrame, theory: str = MEAN_FIELD) -> list[str]:
    """What the dashed lines are (``theory``), and which cells have none and why."""
    notes = []
    if len(overlay):
        anchored = " δ is anchored at the measured last hidden layer." if (overlay["stat"] == "delta_std").any() else ""
        notes.append(f"Dashed: the {theory}, for the start only.{anchored}")
    for reason, cells in predicted.skipped.groupby("reason", sort=False)["cell"]:
        notes.append(f"No prediction for {len(cells)} cell(s) ({', '.join(cells)}): {reason}.")
    return notes


def gradient_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """Std of the back-propagated gradient δ and the weight-gradient norm against layer, at the
    start and the end (log scale, geometric mean over seeds): a slope means vanishing or exploding gradients."""
    stats = [("delta_std", "std of δ = B·∂L/∂z", True), ("grad_norm", "‖∂L/∂W‖", True)]
    return profile(
        study,
        stats,
        "Gradient profile across layers (Glorot & Bengio fig. 7 style)",
        hue,
        style,
        col,
        row,
        wrap,
        predictions,
    )


def activation_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """Mean (linear) and standard deviation (log, geometric mean over seeds) of the activations against layer, at the start and the end."""
    stats = [("act_mean", "activation mean", False), ("act_std", "activation std", True)]
    return profile(study, stats, "Activation profile across layers", hue, style, col, row, wrap, predictions)


def branch_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """A residual net's branches against block, at the start and the end: the std of a * F(x_{l-1})
    and its ratio to the std of the incoming stream x_{l-1} (the quantity De & Smith 2020 plot:
    batch norm shrinks it like 1/sqrt(l), SkipInit and ReZero start it at 0)."""
    stats = [("branch_std", "std of the branch a·F", True), ("branch_ratio", "branch std / stream std", True)]
    return profile(study, stats, "Residual branches across blocks", hue, style, col, row, wrap, predictions)


def shattering_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """The correlation of dL/dz_l between neighbouring inputs on a line through the data, against
    layer, at the start and the end (``stats.extra=[shattering]``): near 1 where the gradient is
    smooth, near 0 where it has shattered into noise (Balduzzi et al. 2017)."""
    stats = [("shattering", "neighbour correlation of ∂L/∂z", False)]
    return profile(study, stats, "Gradient shattering across layers", hue, style, col, row, wrap, predictions)


def variance_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """Std of each layer's pre-activation z_l and of its activation h_l against layer, at the start
    and the end (log scale): a layer whose z spreads far more than the h it gets is amplifying."""
    stats = [("z_std", "std of z (input to φ)", True), ("act_std", "std of h = φ(z)", True)]
    return profile(study, stats, "Spread of z and h across layers", hue, style, col, row, wrap, predictions)
