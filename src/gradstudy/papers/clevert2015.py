"""Clevert, Unterthiner & Hochreiter 2015, "Fast and accurate deep network learning by exponential linear units".

Preset ``conf/experiment/clevert2015.yaml`` (MNIST experiment of section 4.1, fig. 1). Cells are the
arms ``elu`` (alpha 1), ``relu`` and ``leaky_relu_01`` (alpha 0.1).
"""

from __future__ import annotations

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
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study, rows_of

ARMS = {"ELU": ("elu", None), "ReLU": ("relu", None), "Leaky ReLU (α=0.1)": ("leaky_relu", 0.1)}

#: Fig. 1 (MNIST, 8 x 128): what the paper reports, qualitatively (curves, no table).
PAPER_TABLE = pd.DataFrame(
    {
        "median unit activation (fig. 1 left)": ["closest to zero", "positive, larger", "positive, larger"],
        "training loss (fig. 1 right)": ["falls fastest", "slower", "slower"],
    },
    index=list(ARMS),
)


def _cell(study: Study, act: str) -> str:
    return cell(study, act=act)


def _mean_shift(study: Study, act: str) -> pd.Series:
    """Per seed: |median over units of the batch-mean activation|, averaged over layers and measured steps."""
    values = layer_values(study, _cell(study, act), "unit_mean_median")
    return values.abs().mean(axis=1).groupby("seed").mean()


def _closer_to_zero(other: str):
    def measure(study: Study) -> Measurement:
        return difference(_mean_shift(study, "elu"), _mean_shift(study, other))

    return measure


def _auc(study: Study, act: str) -> pd.Series:
    aucs = loss_auc(study)
    rows = rows_of(aucs, _cell(study, act))
    if rows.empty:
        raise MissingCells(f"no training-loss curve for act={act}")
    return rows.set_index("seed")["train_loss_auc"]


def _falls_faster(other: str):
    def measure(study: Study) -> Measurement:
        return difference(_auc(study, "elu"), _auc(study, other))

    return measure


_SHIFT = "fig. 1 (left) and §2-3: ELUs push the mean activation toward zero, which speeds up learning. Threshold: ELU minus {} below 0."
_SPEED = "fig. 1 (right): ELU's training loss decreases faster. Threshold: area under the training-loss curve, ELU minus {}, below 0."
CLAIMS = (
    Claim(
        "elu_median_closer_to_zero_than_relu",
        "ELU's median unit activation stays closer to zero than ReLU's.",
        _SHIFT.format("ReLU"),
        "|median unit activation| averaged over layers and steps, ELU - ReLU",
        BELOW,
        0.0,
        _closer_to_zero("relu"),
    ),
    Claim(
        "elu_median_closer_to_zero_than_leaky",
        "ELU's median unit activation stays closer to zero than leaky ReLU's.",
        _SHIFT.format("leaky ReLU"),
        "|median unit activation| averaged over layers and steps, ELU - leaky ReLU",
        BELOW,
        0.0,
        _closer_to_zero("leaky_relu"),
    ),
    Claim(
        "elu_loss_faster_than_relu",
        "ELU's training loss falls faster than ReLU's.",
        _SPEED.format("ReLU"),
        "training-loss AUC, ELU - ReLU",
        BELOW,
        0.0,
        _falls_faster("relu"),
    ),
    Claim(
        "elu_loss_faster_than_leaky",
        "ELU's training loss falls faster than leaky ReLU's.",
        _SPEED.format("leaky ReLU"),
        "training-loss AUC, ELU - leaky ReLU",
        BELOW,
        0.0,
        _falls_faster("leaky_relu"),
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    rows = {}
    for row, (act, _) in ARMS.items():
        try:
            shift = interval_of(_mean_shift(study, act))
            loss = interval_of(final_values(study, _cell(study, act), "train", "loss"))
        except MissingCells:
            rows[row] = {c: "missing" for c in PAPER_TABLE.columns}
            continue
        rows[row] = {
            PAPER_TABLE.columns[0]: f"|median| {shift:.3f}",
            PAPER_TABLE.columns[1]: f"final {loss:.3f}",
        }
    return pd.DataFrame(rows).T


PAPER = Paper(
    name="clevert2015",
    citation="Clevert, Unterthiner & Hochreiter 2015, Fast and accurate deep network learning by exponential linear units (ELUs), arXiv 1511.07289",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="Fig. 1 (MNIST, 8 hidden layers of 128 units); the paper shows curves, not numbers. Ours: mean [95% t CI] over seeds.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "fig1_median_activation",
            "Median over units of the batch-mean activation, per layer over training (their fig. 1, left).",
            plots.unit_mean_median_over_training,
            ("layers",),
            ("unit_mean_median",),
        ),
        FigureSpec(
            "fig1_learning_curves", "Training loss and test accuracy (their fig. 1, right).", plots.learning_curves
        ),
    ),
    setup="MNIST, 8 hidden layers of 128 units, He init, SGD lr 0.01, minibatch 64, 5 runs, 300 epochs.",
    differences={
        "cpu": "mnist5k (5,000 MNIST digits) and 3,000 updates instead of full MNIST and 300 epochs.",
        "paper": "25 epochs (23,500 updates) of full MNIST instead of 300.",
        "smoke": "3 updates: a plumbing check, not a reproduction.",
    },
)
