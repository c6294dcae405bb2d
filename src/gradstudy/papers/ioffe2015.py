"""Ioffe & Szegedy 2015, "Batch normalization", section 4.1 and fig. 1 (MNIST, 3 x 100 sigmoid).

Preset ``conf/experiment/ioffe2015.yaml``. The paper follows single units of the last hidden layer:
so do the drift claims, from ``stats.extra=[unit_percentiles]`` (the first 8 units of each layer).
Each unit's drift is measured per percentile, relative to that unit's own step-0 spread, so that a
symmetric widening (the 15th and 85th moving apart around a still median) cannot pass for a stable
median or the other way round; the median over units is each seed's value. The layer-pooled
percentiles of the ``full`` tier are kept for the figure only.
"""

from __future__ import annotations

import pandas as pd

from gradstudy.analysis.convergence import steps_to_target
from gradstudy.analysis.seeds import lower_median
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    difference,
    final_values,
    interval_of,
    of_seeds_log,
    ratio,
    steps_earlier,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.show.present import number
from gradstudy.store.study import Study, rows_of

#: "A given test accuracy": 0.9, well below both nets' final accuracy in fig. 1(a).
TARGET_ACCURACY = 0.9
PERCENTILE_NAMES = {"z_p15": "15th", "z_p50": "50th", "z_p85": "85th"}

PAPER_TABLE = pd.DataFrame(
    {
        "test accuracy (fig. 1a)": ["reaches ~0.97 more slowly", "higher, sooner"],
        "sigmoid input 15/50/85th percentiles (fig. 1b, c)": ["drift during training", "stable"],
    },
    index=["Without BN", "With BN"],
)


def unit_drift(study: Study, norm: str, stat: str) -> pd.Series:
    """Per seed: the median over the last hidden layer's followed units of how far the unit's ``stat``
    percentile moved from its step-0 value at most, in units of that unit's step-0 15-85 spread."""
    rows = rows_of(study.units, cell(study, norm=norm))
    if rows.empty:
        raise MissingCells("no units.parquet rows: the preset records stats.extra=[unit_percentiles]")
    top = rows[rows["layer"] == rows["layer"].max()]
    wide = top.pivot_table(index=["seed", "unit", "step"], columns="stat", values="value")
    start = wide.xs(0, level="step")
    spread = start["z_p85"] - start["z_p15"]
    moved = (wide[stat] - start[stat].reindex(wide.index.droplevel("step")).to_numpy()).abs()
    largest = moved.groupby(level=["seed", "unit"]).max()
    return (largest / spread).groupby(level="seed").median()


def _bn_faster(study: Study) -> Measurement:
    return steps_earlier(
        study, {"bn": cell(study, norm="batchnorm"), "no bn": cell(study, norm="none")}, TARGET_ACCURACY
    )


def _bn_more_accurate(study: Study) -> Measurement:
    return difference(
        final_values(study, cell(study, norm="batchnorm"), "test", "accuracy"),
        final_values(study, cell(study, norm="none"), "test", "accuracy"),
    )


def _drift_larger(stat: str):
    def measure(study: Study) -> Measurement:
        return ratio(unit_drift(study, "none", stat), unit_drift(study, "batchnorm", stat))

    return measure


def _bn_stable(stat: str):
    def measure(study: Study) -> Measurement:
        return of_seeds_log(unit_drift(study, "batchnorm", stat))

    return measure


CLAIMS = (
    Claim(
        "bn_reaches_accuracy_sooner",
        f"With BN the network reaches {TARGET_ACCURACY:.0%} test accuracy in fewer steps.",
        "§4.1, fig. 1(a): the BN network trains faster. Threshold: steps to 0.9 test accuracy, "
        "BN minus no BN (lower medians, bootstrap CI), below 0.",
        "steps to test accuracy 0.9, BN - no BN",
        BELOW,
        0.0,
        _bn_faster,
    ),
    Claim(
        "bn_higher_accuracy",
        "With BN the network reaches a higher test accuracy.",
        "§4.1, fig. 1(a): '...and achieves higher test accuracy'. Threshold: final test accuracy, BN minus no BN "
        "(Welch), above 0.",
        "final test accuracy, BN - no BN",
        ABOVE,
        0.0,
        _bn_more_accurate,
    ),
    *(
        claim
        for stat, name in PERCENTILE_NAMES.items()
        for claim in (
            Claim(
                f"{stat}_drifts_more_without_bn",
                f"Without BN, single units' {name} percentile of the sigmoid input drifts more than with BN.",
                "§4.1, fig. 1(b, c), which follow a typical unit. Per unit of the last hidden layer: the largest move of "
                f"its {name} percentile from step 0, over its own step-0 15-85 spread; median over the 8 units. "
                "Threshold: without BN over with BN (ratio of geometric means over seeds, log-scale interval), above 1.",
                f"{name}-percentile drift per unit, no BN / BN",
                ABOVE,
                1.0,
                _drift_larger(stat),
            ),
            Claim(
                f"{stat}_stable_with_bn",
                f"With BN, single units' {name} percentile of the sigmoid input stays stable.",
                "§4.1, fig. 1(c): with BN the distribution is 'much more stable'. Threshold: the unit's "
                f"{name} percentile moves less than a quarter of its step-0 15-85 spread.",
                f"{name}-percentile drift per unit with BN",
                BELOW,
                0.25,
                _bn_stable(stat),
            ),
        )
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    times = steps_to_target(study.curves, TARGET_ACCURACY)
    rows = {}
    for row, norm in (("Without BN", "none"), ("With BN", "batchnorm")):
        try:
            c = cell(study, norm=norm)
            acc = interval_of(final_values(study, c, "test", "accuracy"))
            drifts = {name: interval_of(unit_drift(study, norm, stat)) for stat, name in PERCENTILE_NAMES.items()}
        except MissingCells:
            rows[row] = {col: "missing" for col in PAPER_TABLE.columns}
            continue
        steps = lower_median(rows_of(times, c)["step"])
        rows[row] = {
            PAPER_TABLE.columns[0]: f"final {acc:.4f}; 0.9 at step {number(steps, '.0f')}",
            PAPER_TABLE.columns[1]: "drift per unit (x its step-0 spread): "
            + "; ".join(f"{name} {drift:.3f}" for name, drift in drifts.items()),
        }
    return pd.DataFrame(rows).T


PAPER = Paper(
    name="ioffe2015",
    citation="Ioffe & Szegedy 2015, Batch normalization: accelerating deep network training by reducing internal covariate shift, arXiv 1502.03167",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="Fig. 1 (MNIST, 3 x 100 sigmoid, 50,000 steps of minibatch 60); curves, not numbers. Ours: mean [95% t CI] over seeds.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "fig1a_learning_curves",
            "Training loss and test accuracy with and without BN (their fig. 1a).",
            plots.learning_curves,
        ),
        FigureSpec(
            "fig1bc_unit_percentiles",
            "15/50/85th percentiles of single units' sigmoid input in the last hidden layer over training (their fig. 1b, c).",
            plots.unit_percentiles,
            ("units",),
        ),
        FigureSpec(
            "fig1bc_percentiles",
            "15/50/85th percentiles of the first and last hidden layers' sigmoid input over training, pooled over each layer's units.",
            plots.preactivation_percentiles,
            ("layers",),
            ("z_p15", "z_p50", "z_p85"),
        ),
    ),
    setup="MNIST, 3 hidden layers of 100 sigmoid units, small random Gaussian init, minibatch 60, 50,000 steps, BN before the nonlinearity.",
    differences={
        "cpu": "mnist5k (5,000 MNIST digits) and 5,000 steps instead of full MNIST and 50,000; init N(0, 0.1^2) and SGD lr 0.1 are our choices.",
        "paper": "init N(0, 0.1^2) and SGD lr 0.1 are our choices (the paper does not give them).",
        "smoke": "3 updates: a plumbing check, not a reproduction.",
    },
)
