"""Zhang, Dauphin & Ma 2019, "Fixup initialization: residual learning without normalization".

Preset ``conf/experiment/zhang2019.yaml``: a residual MLP at depth 10, 50 and 100 under three arms,
He init without normalization (``res_he``), Fixup (``res_fixup``) and He with batch norm
(``res_he_bn``).

Thresholds, fixed before the first cpu run: a net "fails" when its mean final test accuracy is
below ``FAILS`` = 0.2 (twice chance); "within a few points" of batch norm is a Fixup-minus-BN
difference in final test accuracy above -``FEW_POINTS`` = -0.05; the step-0 stream "grows with
depth" when the std of the stream after the last block is more than ``GROWTH`` = 10 times that
after the first.
"""

from __future__ import annotations

import pandas as pd

from gradstudy.cells.statistics import Summary
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    Paper,
    cell,
    difference,
    layer_values,
    of_seeds,
    of_seeds_log,
    seeds_table,
    test_accuracy,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

DEPTHS = (10, 50, 100)
DEPTH_COLUMNS = {f"depth {d}": {"model__depth": d} for d in DEPTHS}
ARMS = {"res_he": "He, no norm", "res_fixup": "Fixup", "res_he_bn": "He + batch norm"}
FAILS = 0.2
FEW_POINTS = 0.05
GROWTH = 10.0

PAPER_TABLE = pd.DataFrame(
    {
        "shallow": ["trains", "trains", "trains"],
        "deep (100+ blocks)": ["fails: the signal explodes", "trains, close to batch norm", "trains"],
    },
    index=list(ARMS.values()),
)


def stream_growth(study: Study, cell_id) -> pd.Series:
    """Per seed: the step-0 std of the stream after the last block over that after the first."""
    stds = layer_values(study, cell_id, "act_std").xs(0, level="step")
    return stds[stds.columns.max()] / stds[stds.columns.min()]


def _growth(depth: int):
    def measure(study: Study) -> Measurement:
        return of_seeds_log(stream_growth(study, cell(study, arm="res_he", model__depth=depth)), depth=depth)

    return measure


def _accuracy(arm: str, depth: int):
    def measure(study: Study) -> Measurement:
        return of_seeds(test_accuracy(study, cell(study, arm=arm, model__depth=depth)), depth=depth)

    return measure


def _fixup_minus_bn(depth: int):
    def measure(study: Study) -> Measurement:
        fixup, bn = (
            test_accuracy(study, cell(study, arm=arm, model__depth=depth)) for arm in ("res_fixup", "res_he_bn")
        )
        return difference(fixup, bn, depth=depth)

    return measure


CLAIMS = (
    Claim(
        "he_stream_grows_at_100",
        "With He init and no normalization, the forward signal grows with depth: at 100 blocks the stream after the last block is far larger than after the first, at init.",
        "§2 (the variance of the output grows exponentially with depth without normalization; Hanin & Rolnick 2018). "
        "Threshold: step-0 std of the last block's stream over the first's above 10 (geometric mean over seeds).",
        "stream std, last block / first block, step 0, He no norm, depth 100",
        ABOVE,
        GROWTH,
        _growth(100),
    ),
    Claim(
        "he_fails_at_100",
        "With He init and no normalization, the 100-block net fails to train or diverges.",
        "§2 and §4: standard init without normalization does not train very deep residual nets. "
        "Threshold: final test accuracy below 0.2 (twice chance); a diverged seed counts at its last healthy evaluation.",
        "final test accuracy, He no norm, depth 100",
        BELOW,
        FAILS,
        _accuracy("res_he", 100),
    ),
    *(
        Claim(
            f"fixup_near_bn_at_{d}",
            f"At {d} blocks, Fixup trains to within a few points of He + batch norm.",
            "§4 (Fixup matches batch norm's accuracy at every depth tried). "
            "Threshold: final test accuracy, Fixup minus He + BN, above -0.05 (Welch's interval).",
            f"final test accuracy, Fixup - He + BN, depth {d}",
            ABOVE,
            -FEW_POINTS,
            _fixup_minus_bn(d),
        )
        for d in DEPTHS
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final test accuracy (mean [CI] over seeds) per arm and depth."""
    arms = {label: {"arm": arm} for arm, label in ARMS.items()}
    return seeds_table(study, arms, DEPTH_COLUMNS, test_accuracy, Summary.FRACTION)


PAPER = Paper(
    name="zhang2019",
    citation="Zhang, Dauphin & Ma 2019, Fixup initialization: residual learning without normalization, ICLR 2019, arXiv 1901.09321",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="§2 and §4 (tables 1-3, fig. 2): what they report, qualitatively.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "stream_profile",
            "Std of the stream after each block at the start and the end, one panel per depth, coloured by arm.",
            plots.activation_profile,
            ("layers",),
            ("act_std",),
            options={"hue": ["arm"], "col": ["model.depth"]},
            channels=(),
            uses_predictions=True,
        ),
        FigureSpec(
            "branch_profile",
            "Std of each branch a·F and its ratio to the incoming stream, per block, coloured by arm.",
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
    setup="Residual conv nets (ResNet, up to 10,000 layers) on CIFAR-10 and ImageNet, and Transformers; SGD with momentum.",
    differences={
        "cpu": "resmlp with 2-layer ReLU branches, width 64, depths 10/50/100, mnist5k, 300 SGD+momentum steps (lr 0.01), 3 seeds; our choices.",
        "paper": "width 128, full MNIST, 5,000 steps, 5 seeds; still an MLP, not the paper's conv nets.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
