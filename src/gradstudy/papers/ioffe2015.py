"""Ioffe & Szegedy 2015, "Batch normalization", section 4.1 and fig. 1 (MNIST, 3 x 100 sigmoid).

Preset ``conf/experiment/ioffe2015.yaml``. The percentiles are those of the last hidden layer's
sigmoid input over (example, unit) of each minibatch; the paper plots one typical unit.
"""

from __future__ import annotations

import pandas as pd

from gradstudy import plots
from gradstudy.analysis import compare_cells, lower_median, steps_to_target
from gradstudy.figures import FigureSpec
from gradstudy.papers import (
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    final_values,
    interval_of,
    layer_values,
    of_seeds_log,
    ratio,
    rows_of,
)
from gradstudy.present import number
from gradstudy.store import Study

#: "A given test accuracy": 0.9, well below both nets' final accuracy in fig. 1(a).
TARGET_ACCURACY = 0.9
PERCENTILES = ("z_p15", "z_p50", "z_p85")

PAPER_TABLE = pd.DataFrame(
    {
        "test accuracy (fig. 1a)": ["reaches ~0.97 more slowly", "higher, sooner"],
        "sigmoid input 15/50/85th percentiles (fig. 1b, c)": ["drift during training", "stable"],
    },
    index=["Without BN", "With BN"],
)


def _drift(study: Study, norm: str) -> pd.Series:
    """Per seed: the largest move of the last hidden layer's 15/50/85th percentiles from their step-0 value,
    averaged over the three, in units of the step-0 spread (85th - 15th percentile)."""
    c = cell(study, norm=norm)
    moves = []
    for stat in PERCENTILES:
        values = layer_values(study, c, stat)
        top = values[values.columns.max()].unstack("seed")
        moves.append((top - top.loc[0]).abs().max())
    p15, p85 = (layer_values(study, c, s) for s in ("z_p15", "z_p85"))
    spread = (p85[p85.columns.max()] - p15[p15.columns.max()]).xs(0, level="step")
    return sum(moves) / len(moves) / spread


def _bn_faster(study: Study) -> Measurement:
    bn, plain = cell(study, norm="batchnorm"), cell(study, norm="none")
    diff = compare_cells(study, bn, plain, TARGET_ACCURACY)
    times = steps_to_target(study.curves, TARGET_ACCURACY)
    medians = {f"median steps {n}": lower_median(rows_of(times, c)["step"]) for n, c in (("bn", bn), ("no bn", plain))}
    return Measurement(diff["difference"], diff["low"], diff["high"], medians)


def _drift_larger(study: Study) -> Measurement:
    return ratio(_drift(study, "none"), _drift(study, "batchnorm"))


def _bn_stable(study: Study) -> Measurement:
    return of_seeds_log(_drift(study, "batchnorm"))


CLAIMS = (
    Claim(
        "bn_reaches_accuracy_sooner",
        f"With BN the network reaches {TARGET_ACCURACY:.0%} test accuracy in fewer steps.",
        "§4.1, fig. 1(a): the BN network trains faster and reaches a higher accuracy. Threshold: steps to 0.9 test accuracy, "
        "BN minus no BN (lower medians, bootstrap CI), below 0.",
        "steps to test accuracy 0.9, BN - no BN",
        "below",
        0.0,
        _bn_faster,
    ),
    Claim(
        "percentiles_drift_without_bn",
        "Without BN, the sigmoid input's 15/50/85th percentiles drift more than with BN.",
        "§4.1, fig. 1(b, c). Threshold: drift (largest move from step 0, in units of the step-0 15-85 spread, last hidden layer) "
        "without BN divided by with BN (ratio of geometric means over seeds, log-scale interval), above 1.",
        "percentile drift, no BN / BN",
        "above",
        1.0,
        _drift_larger,
    ),
    Claim(
        "percentiles_stable_with_bn",
        "With BN, the sigmoid input's distribution stays stable.",
        "§4.1, fig. 1(c): with BN the distribution is much more stable. Threshold: percentiles move less than a quarter of their "
        "step-0 15-85 spread.",
        "percentile drift with BN",
        "below",
        0.25,
        _bn_stable,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    times = steps_to_target(study.curves, TARGET_ACCURACY)
    rows = {}
    for row, norm in (("Without BN", "none"), ("With BN", "batchnorm")):
        try:
            c = cell(study, norm=norm)
            acc = interval_of(final_values(study, c, "test", "accuracy"))
            drift = interval_of(_drift(study, norm))
        except MissingCells:
            rows[row] = {col: "missing" for col in PAPER_TABLE.columns}
            continue
        steps = lower_median(rows_of(times, c)["step"])
        rows[row] = {
            PAPER_TABLE.columns[0]: f"final {acc:.4f}; 0.9 at step {number(steps, '.0f')}",
            PAPER_TABLE.columns[1]: f"drift {drift:.3f} (x step-0 spread)",
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
            "fig1bc_percentiles",
            "15/50/85th percentiles of the first and last hidden layers' sigmoid input over training (their fig. 1b, c).",
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
