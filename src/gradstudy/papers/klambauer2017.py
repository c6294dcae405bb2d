"""Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-normalizing neural networks", fig. 1.

Preset ``conf/experiment/klambauer2017.yaml``: arm ``snn`` (SELU, LeCun-normal init) against arm
``relu_bn`` (ReLU, He init, batch norm) at 8, 16 and 32 layers, standardized inputs. The training
threshold is a fraction of the chance-level loss ln(10) (MNIST).
"""

from __future__ import annotations

import math

import pandas as pd

from gradstudy.analysis.convergence import loss_auc
from gradstudy.papers.claims import (
    BELOW,
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    difference,
    final_values,
    interval_of,
    layer_values,
    of_seeds,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study, rows_of

CHANCE_LOSS = math.log(10)
DEPTHS = (8, 16, 32)
#: "mean ≈ 0": every layer's activation mean within 0.1 of 0 at step 0.
MEAN_TOLERANCE = 0.1
#: "variance ≈ 1": every layer's activation variance within 25% of 1 at step 0.
VARIANCE_TOLERANCE = 0.25

PAPER_TABLE = pd.DataFrame(
    {
        f"{d} layers": [
            "trains; loss falls faster" if d == 32 else "trains",
            "trains, loss falls more slowly and noisily",
        ]
        for d in DEPTHS
    },
    index=["SNN (SELU)", "ReLU + BatchNorm"],
)


def _worst_layer(depth: int, stat: str, target: float):
    def measure(study: Study) -> Measurement:
        values = layer_values(study, cell(study, act="selu", model__depth=depth), stat).xs(0, level="step")
        values = values**2 if stat == "act_std" else values
        return of_seeds((values - target).abs().max(axis=1))

    return measure


def _trains(depth: int):
    def measure(study: Study) -> Measurement:
        return of_seeds(
            final_values(study, cell(study, act="selu", model__depth=depth), "train", "loss"), chance=CHANCE_LOSS
        )

    return measure


def _auc(study: Study, act: str, depth: int) -> pd.Series:
    c = cell(study, act=act, model__depth=depth)
    aucs = loss_auc(study)
    return rows_of(aucs, c).set_index("seed")["train_loss_auc"]


def _faster_at_32(study: Study) -> Measurement:
    return difference(_auc(study, "selu", 32), _auc(study, "relu", 32))


CLAIMS = (
    Claim(
        "selu_mean_zero_at_init",
        "At init, SELU activations keep mean ≈ 0 through all layers (32 layers).",
        "§3 (fixed point (0, 1) of the mean/variance map) and fig. 1's networks. Threshold: the largest |activation mean| over layers below 0.1 at step 0.",
        "max over layers of |act mean| at step 0, SNN, 32 layers",
        BELOW,
        MEAN_TOLERANCE,
        _worst_layer(32, "act_mean", 0.0),
    ),
    Claim(
        "selu_variance_one_at_init",
        "At init, SELU activations keep variance ≈ 1 through all layers (32 layers).",
        "§3, fixed point variance 1. Threshold: the largest |activation variance - 1| over layers below 0.25 at step 0.",
        "max over layers of |act variance - 1| at step 0, SNN, 32 layers",
        BELOW,
        VARIANCE_TOLERANCE,
        _worst_layer(32, "act_std", 1.0),
    ),
    *(
        Claim(
            f"selu_trains_{d}",
            f"SELU trains at {d} layers.",
            "Fig. 1: SNNs train at 8, 16 and 32 layers. Threshold: final training loss below half of ln(10).",
            f"final training loss, SNN, {d} layers",
            BELOW,
            0.5 * CHANCE_LOSS,
            _trains(d),
        )
        for d in DEPTHS
    ),
    Claim(
        "selu_faster_than_bn_at_32",
        "At 32 layers, SELU trains faster than ReLU + batch norm.",
        "Fig. 1: the SNN training loss falls faster than BatchNorm's. Threshold: area under the training-loss curve, SNN minus ReLU+BN, below 0.",
        "training-loss AUC, SNN - ReLU+BN, 32 layers",
        BELOW,
        0.0,
        _faster_at_32,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    rows = {}
    for row, act in (("SNN (SELU)", "selu"), ("ReLU + BatchNorm", "relu")):
        rows[row] = {}
        for depth in DEPTHS:
            try:
                loss = interval_of(final_values(study, cell(study, act=act, model__depth=depth), "train", "loss"))
                auc = interval_of(_auc(study, act, depth)).estimate
                rows[row][f"{depth} layers"] = f"final train loss {loss:.3f}; AUC {auc:.0f}"
            except MissingCells:
                rows[row][f"{depth} layers"] = "missing"
    return pd.DataFrame(rows).T


PAPER = Paper(
    name="klambauer2017",
    citation="Klambauer, Unterthiner, Mayr & Hochreiter 2017, Self-normalizing neural networks, arXiv 1706.02515",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="Fig. 1 (MNIST and CIFAR-10, 8/16/32 layers, SGD); curves, not numbers. Ours: mean [95% t CI] over seeds, AUC = area under the training loss.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "fig1_learning_curves",
            "Training loss and test accuracy, SNN vs ReLU + BN at 8, 16 and 32 layers (their fig. 1).",
            plots.learning_curves,
        ),
        FigureSpec(
            "selu_activation_profile",
            "SELU activation mean and std per layer at step 0 and at the end: the fixed point (0, 1).",
            plots.activation_profile,
            ("layers",),
            ("act_mean", "act_std"),
            where={"act": "selu"},
        ),
    ),
    setup="MNIST and CIFAR-10, SNN (SELU, LeCun-normal init, standardized inputs) vs ReLU + BatchNorm at 8, 16 and 32 layers, SGD.",
    differences={
        "cpu": "mnist5k, 64 units, 1,500 SGD updates (lr 0.01); width and learning rate are our choices; no CIFAR-10 arm.",
        "paper": "full MNIST, 256 units, 20,000 SGD updates (lr 0.01); width and learning rate are our choices; no CIFAR-10 arm.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
