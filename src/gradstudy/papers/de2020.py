"""De & Smith 2020, "Batch normalization biases residual blocks towards the identity function in deep networks".

Preset ``conf/experiment/de2020.yaml``: a residual MLP at depth 10, 50 and 100 under three arms, He
init with batch norm on the branch (``res_he_bn``), without norm (``res_he``) and SkipInit
(``res_skipinit``: no norm, a learned branch multiplier starting at 0).

The 1/sqrt(l) claim is a slope: per seed, the least-squares slope of log(branch std / incoming
stream std) on log(l) over every block l of the deepest batch-norm net at step 0; the claim holds
when its interval over seeds lies inside (``SLOPE_LOW``, ``SLOPE_HIGH``) = (-0.65, -0.35), around
the -1/2 of the paper's argument. With stream variance v_0 + (l-1) at block l the exact slope over
100 blocks is -0.58 for v_0 = 0.1 and -0.43 for v_0 = 3: the window admits those, not a flat or a
1/l profile.

Thresholds, fixed before the first cpu run: that window; "fails" is a mean final test accuracy
below ``FAILS`` = 0.2 (twice chance), "trains" at least ``TRAINS`` = 0.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.cells.statistics import Summary
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    Paper,
    cell,
    layer_values,
    of_seeds,
    seeds_table,
    test_accuracy,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

DEPTHS = (10, 50, 100)
DEPTH_COLUMNS = {f"depth {d}": {"model__depth": d} for d in DEPTHS}
ARMS = {"res_he_bn": "batch norm", "res_he": "no norm (a = 1)", "res_skipinit": "SkipInit (a from 0)"}
SLOPE_LOW, SLOPE_HIGH = -0.65, -0.35
FAILS, TRAINS = 0.2, 0.5

PAPER_TABLE = pd.DataFrame(
    {
        "branch / stream std at init": ["falls like 1/sqrt(l)", "about 1 (the stream doubles per block)", "0"],
        "deep nets": ["train", "do not train", "train"],
    },
    index=list(ARMS.values()),
)


def ratio_slope(study: Study, cell_id) -> pd.Series:
    """Per seed: the least-squares slope of log(branch_ratio) against log(block) at step 0."""
    ratios = layer_values(study, cell_id, "branch_ratio").xs(0, level="step")
    blocks = np.log(ratios.columns.to_numpy(np.float64))
    return ratios.apply(lambda row: np.polyfit(blocks, np.log(row.to_numpy(np.float64)), 1)[0], axis=1)


def _slope(study: Study) -> Measurement:
    depth = max(DEPTHS)
    return of_seeds(ratio_slope(study, cell(study, arm="res_he_bn", model__depth=depth)), depth=depth)


def _accuracy(arm: str, depth: int):
    def measure(study: Study) -> Measurement:
        return of_seeds(test_accuracy(study, cell(study, arm=arm, model__depth=depth)), depth=depth)

    return measure


_SLOPE_SOURCE = (
    "§2-3: with batch norm on the branch, Var(stream) grows by about one per block while each branch is normalized, "
    "so the branch/stream std ratio at block l is about 1/sqrt(l) at init (their fig. 2)."
)

CLAIMS = (
    Claim(
        "bn_ratio_slope_above",
        "With batch norm, the branch/stream std ratio at init falls with block index no faster than 1/sqrt(l) allows (100 blocks).",
        f"{_SLOPE_SOURCE} Threshold: the log-log slope over blocks above -0.65 (t interval over seeds).",
        "slope of log(branch std / stream std) on log(block), step 0, batch norm, depth 100",
        ABOVE,
        SLOPE_LOW,
        _slope,
    ),
    Claim(
        "bn_ratio_slope_below",
        "With batch norm, the branch/stream std ratio at init falls with block index as 1/sqrt(l) does, not flatter (100 blocks).",
        f"{_SLOPE_SOURCE} Threshold: the log-log slope over blocks below -0.35 (t interval over seeds).",
        "slope of log(branch std / stream std) on log(block), step 0, batch norm, depth 100",
        BELOW,
        SLOPE_HIGH,
        _slope,
    ),
    Claim(
        "no_norm_fails_at_100",
        "Without normalization and with branch multiplier 1, the 100-block net does not train.",
        "§4: the unnormalized net with standard init cannot be trained at depth. "
        "Threshold: final test accuracy below 0.2 (twice chance); a diverged seed counts at its last healthy evaluation.",
        "final test accuracy, no norm, depth 100",
        BELOW,
        FAILS,
        _accuracy("res_he", 100),
    ),
    Claim(
        "skipinit_trains_at_100",
        "SkipInit (a learned branch multiplier starting at 0, no normalization) trains the 100-block net.",
        "§4 (SkipInit trains deep residual nets without normalization). Threshold: final test accuracy at least 0.5.",
        "final test accuracy, SkipInit, depth 100",
        ABOVE,
        TRAINS,
        _accuracy("res_skipinit", 100),
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final test accuracy per arm and depth, and batch norm's step-0 ratio slope per depth."""
    arms = {label: {"arm": arm} for arm, label in ARMS.items()}
    slope = {"batch norm: log-log slope of branch/stream at init": {"arm": "res_he_bn"}}
    return pd.concat(
        [
            seeds_table(study, arms, DEPTH_COLUMNS, test_accuracy, Summary.FRACTION),
            seeds_table(study, slope, DEPTH_COLUMNS, ratio_slope),
        ]
    )


PAPER = Paper(
    name="de2020",
    citation="De & Smith 2020, Batch normalization biases residual blocks towards the identity function in deep networks, NeurIPS 2020, arXiv 2002.10444",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="§2-4 and fig. 2: what they report, qualitatively.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "branch_profile",
            "Std of each branch a·F and its ratio to the incoming stream per block, at the start and the end, coloured by arm (their fig. 2).",
            plots.branch_profile,
            ("layers",),
            ("branch_std", "branch_ratio"),
            options={"hue": ["arm"], "col": ["model.depth"]},
            channels=(),
            uses_predictions=True,
        ),
        FigureSpec(
            "learning_curves",
            "Test accuracy over training, one panel per depth, coloured by arm.",
            plots.learning_curves,
            ("curves",),
            options={"hue": ["arm"], "col": ["model.depth"]},
            channels=(),
        ),
    ),
    setup="Residual conv nets (Wide-ResNets on CIFAR-10, ResNet-50 on ImageNet) with batch norm, without, and with SkipInit; SGD with momentum.",
    differences={
        "cpu": "resmlp with 2-layer ReLU branches, width 64, depths 10/50/100, mnist5k, 300 SGD+momentum steps (lr 0.01), 3 seeds; our choices.",
        "paper": "width 128, full MNIST, 5,000 steps, 5 seeds; still an MLP, not the paper's conv nets.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
