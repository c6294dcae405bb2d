"""He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers", section 2.2 and figs. 2-3.

Preset ``conf/experiment/he2015.yaml``. Their "Xavier" baseline, a Gaussian with std sqrt(1/fan_in),
is our ``lecun`` init (our ``xavier`` averages fan-in and fan-out). Loss thresholds are fractions of
the chance-level loss ln(10) of a 10-class problem (MNIST).
"""

from __future__ import annotations

import math

import numpy as np
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
    layer_values,
    of_seeds,
    of_seeds_log,
    steps_earlier,
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study, rows_of

CHANCE_LOSS = math.log(10)
#: "Stays at chance": the final training loss is within 5% of ln(10).
STALL_FRACTION = 0.95
#: "Trains": the final training loss is below half of ln(10).
TRAIN_FRACTION = 0.5
#: "Starts reducing the loss": the first evaluation with training loss 10% below ln(10).
START_FRACTION = 0.9

#: Figs. 2-3: what the paper reports, qualitatively (curves, no numbers).
PAPER_TABLE = pd.DataFrame(
    {
        "22 layers": ["converges", "converges, starts reducing the error earlier"],
        "30 layers": ["stalls: no progress", "converges"],
    },
    index=["Xavier", "He"],
)


def _final_loss(init: str, depth: int):
    def measure(study: Study) -> Measurement:
        loss = final_values(study, cell(study, init=init, act="relu", model__depth=depth), "train", "loss")
        return of_seeds(loss, chance=CHANCE_LOSS)

    return measure


def _start_earlier(study: Study) -> Measurement:
    he, xavier = (
        cell(study, init="he", act="relu", model__depth=22),
        cell(study, init="lecun", act="relu", model__depth=22),
    )
    return steps_earlier(study, {"he": he, "xavier": xavier}, START_FRACTION * CHANCE_LOSS, "loss", "train")


def _activation_ratio(init: str):
    def measure(study: Study) -> Measurement:
        values = layer_values(study, cell(study, init=init, act="relu", model__depth=30), "act_std").xs(0, level="step")
        return of_seeds_log(values[values.columns.max()] / values[values.columns.min()])

    return measure


def _prelu_minus_relu(study: Study) -> Measurement:
    accuracy = {
        act: final_values(study, cell(study, init="he", act=act, model__depth=22), "test", "accuracy")
        for act in ("prelu", "relu")
    }
    return difference(accuracy["prelu"], accuracy["relu"])


CLAIMS = (
    Claim(
        "xavier_30_stalls",
        "At 30 layers, Xavier init completely stalls: the training loss stays at chance.",
        "§2.2 and fig. 3: the 30-layer model with Xavier init 'completely stalls'. Threshold: final training loss above 95% of ln(10).",
        "final training loss, lecun init, 30 layers",
        ABOVE,
        STALL_FRACTION * CHANCE_LOSS,
        _final_loss("lecun", 30),
    ),
    Claim(
        "he_30_trains",
        "At 30 layers, He init trains.",
        "§2.2 and fig. 3: 'our method converges'. Threshold: final training loss below half of ln(10).",
        "final training loss, he init, 30 layers",
        BELOW,
        TRAIN_FRACTION * CHANCE_LOSS,
        _final_loss("he", 30),
    ),
    Claim(
        "xavier_22_trains",
        "At 22 layers, Xavier init trains.",
        "§2.2 and fig. 2: both inits converge at 22 layers. Threshold: final training loss below half of ln(10).",
        "final training loss, lecun init, 22 layers",
        BELOW,
        TRAIN_FRACTION * CHANCE_LOSS,
        _final_loss("lecun", 22),
    ),
    Claim(
        "he_22_trains",
        "At 22 layers, He init trains.",
        "§2.2 and fig. 2. Threshold: final training loss below half of ln(10).",
        "final training loss, he init, 22 layers",
        BELOW,
        TRAIN_FRACTION * CHANCE_LOSS,
        _final_loss("he", 22),
    ),
    Claim(
        "he_22_starts_earlier",
        "At 22 layers, He init starts reducing the loss earlier than Xavier.",
        "§2.2 and fig. 2: 'ours starts reducing error earlier'. Threshold: steps until the training loss is 10% below ln(10), "
        "He minus Xavier (lower medians, bootstrap CI), below 0.",
        "steps to training loss 0.9·ln(10), he - lecun, 22 layers",
        BELOW,
        0.0,
        _start_earlier,
    ),
    Claim(
        "xavier_activations_decay",
        "Under Xavier init, the activation scale decays with depth.",
        "§2.2: with std sqrt(1/fan_in) each ReLU layer halves the signal's second moment. Threshold: top-layer activation std "
        "below 0.1x the first layer's at step 0 (30 layers).",
        "act std layer 30 / layer 1 at step 0, lecun init",
        BELOW,
        0.1,
        _activation_ratio("lecun"),
    ),
    Claim(
        "he_activations_kept",
        "Under He init, the activation scale is kept through depth.",
        "§2.2, eq. 10: with std sqrt(2/fan_in) the second moment is preserved. Threshold: top-layer activation std above 0.5x "
        "the first layer's at step 0 (30 layers).",
        "act std layer 30 / layer 1 at step 0, he init",
        ABOVE,
        0.5,
        _activation_ratio("he"),
    ),
    Claim(
        "prelu_beats_relu_22",
        "PReLU gives a higher accuracy than ReLU (He init, 22 layers).",
        "§2.1 and Table 2: with everything else equal, learned slopes lower the error (their 14-layer model on ImageNet). "
        "Threshold: final test accuracy, PReLU minus ReLU (Welch), above 0.",
        "final test accuracy, prelu - relu, he init, 22 layers",
        ABOVE,
        0.0,
        _prelu_minus_relu,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final training loss (mean [CI]) and steps to 0.9·ln(10), in the paper's layout."""
    times = steps_to_target(study.curves, START_FRACTION * CHANCE_LOSS, metric="loss", split="train")
    rows = {}
    for init, row in (("lecun", "Xavier"), ("he", "He")):
        rows[row] = {}
        for depth in (22, 30):
            try:
                c = cell(study, init=init, act="relu", model__depth=depth)
            except MissingCells:
                rows[row][f"{depth} layers"] = "missing"
                continue
            loss = interval_of(final_values(study, c, "train", "loss"))
            start = lower_median(rows_of(times, c)["step"])
            started = "never" if not np.isfinite(start) else f"at step {start:.0f}"
            rows[row][f"{depth} layers"] = f"final train loss {loss:.3f}; loss < 0.9·ln10 {started}"
    return pd.DataFrame(rows).T


PAPER = Paper(
    name="he2015",
    citation="He, Zhang, Ren & Sun 2015, Delving deep into rectifiers, arXiv 1502.01852",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="Figs. 2 (22 layers) and 3 (30 layers) on ImageNet; the paper shows curves, not numbers. "
    "'Xavier' is their std sqrt(1/fan_in) Gaussian, our init=lecun.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "fig2_3_learning_curves",
            "Training loss and test accuracy at 22 and 30 layers, Xavier (lecun) vs He (their figs. 2-3), ReLU.",
            plots.learning_curves,
            where={"act": "relu"},
        ),
        FigureSpec(
            "activation_profile",
            "Activation std per layer at step 0: decays with depth under Xavier (lecun), kept under He (ReLU).",
            plots.activation_profile,
            ("layers",),
            ("act_std",),
            where={"act": "relu"},
        ),
        FigureSpec(
            "gradient_profile_30",
            "δ std and ‖∂L/∂W‖ per layer at 30 layers, at the start and the end (ReLU).",
            plots.gradient_profile,
            ("layers",),
            ("delta_std", "grad_norm"),
            where={"model__depth": 30, "act": "relu"},
        ),
        FigureSpec(
            "table2_prelu_vs_relu",
            "Training loss and test accuracy, PReLU against ReLU under He init (their Table 2's comparison).",
            plots.learning_curves,
            where={"init": "he"},
        ),
    ),
    setup="22- and 30-layer ReLU conv nets on ImageNet, SGD with momentum 0.9; PReLU against ReLU on a 14-layer model (Table 2).",
    differences={
        "cpu": "MLPs (128 units) instead of conv nets, mnist5k instead of ImageNet, 2,000 updates with momentum SGD (lr 0.01).",
        "paper": "MLPs (512 units) instead of conv nets, full MNIST instead of ImageNet, 50,000 updates with momentum SGD (lr 0.01).",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
