"""Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural networks".

Preset ``conf/experiment/glorot2010.yaml``. Their "standard" init is our ``standard``, their
"normalized" init our ``xavier``. The activation and gradient claims are checked on Shapeset-3x2
(the dataset of the paper's figures); Table 1's claims on both datasets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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
)
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

#: Table 1: test error (%) after training, 5 hidden layers, by activation and init ("N" = normalized).
TABLE_1 = pd.DataFrame(
    {"Shapeset": [16.27, 16.06, 27.15, 15.60, 82.61], "MNIST": [1.64, 1.72, 1.76, 1.64, 2.21]},
    index=["Softsign", "Softsign N", "Tanh", "Tanh N", "Sigmoid"],
)
#: Table-1 row -> (act, init) of our cells; "Sigmoid N" is in our grid but not in the paper's table.
ARMS = {
    "Softsign": ("softsign", "standard"),
    "Softsign N": ("softsign", "xavier"),
    "Tanh": ("tanh", "standard"),
    "Tanh N": ("tanh", "xavier"),
    "Sigmoid": ("sigmoid", "standard"),
    "Sigmoid N": ("sigmoid", "xavier"),
}
FIGURE_DATA = "shapeset"


def _mnist(study: Study) -> str:
    """The MNIST of this study: full ``mnist`` (paper budget) or ``mnist5k`` (cpu and smoke budgets)."""
    return "mnist" if (study.cells["data"] == "mnist").any() else "mnist5k"


def _first_half(values: pd.DataFrame) -> pd.DataFrame:
    steps = values.index.get_level_values("step")
    return values[steps <= steps.max() / 2]


def _sigmoid_top_layer(study: Study) -> Measurement:
    act = _first_half(layer_values(study, cell(study, act="sigmoid", init="standard", data=FIGURE_DATA), "act_mean"))
    top = act[act.columns.max()].groupby("seed").min()
    return of_seeds(top)


def _sigmoid_lower_layers(study: Study) -> Measurement:
    act = _first_half(layer_values(study, cell(study, act="sigmoid", init="standard", data=FIGURE_DATA), "act_mean"))
    lower = act[[c for c in act.columns if c < act.columns.max()]].groupby("seed").min().min(axis=1)
    return of_seeds(lower)


def _at_step0(study: Study, init: str, stat: str) -> pd.DataFrame:
    values = layer_values(study, cell(study, act="tanh", init=init, data=FIGURE_DATA), stat)
    return values.xs(0, level="step")


def _delta_ratio(init: str):
    def measure(study: Study) -> Measurement:
        delta = _at_step0(study, init, "delta_std")
        return of_seeds_log(delta[delta.columns.min()] / delta[delta.columns.max()])

    return measure


def _weight_gradient_spread(study: Study) -> Measurement:
    """max / min over hidden layers 2..L of ‖∂L/∂W‖ (all width x width, so the norms compare entry for entry)."""
    grads = _at_step0(study, "standard", "grad_norm")
    inner = grads[[c for c in grads.columns if c > 1]]
    delta = _at_step0(study, "standard", "delta_std")
    delta_inner = delta[[c for c in delta.columns if c > 1]]
    delta_spread = float(np.exp(np.log(delta_inner.max(axis=1) / delta_inner.min(axis=1)).mean()))
    return of_seeds_log(inner.max(axis=1) / inner.min(axis=1), delta_std_spread=delta_spread)


def _jacobian(init: str, paper_value: float):
    """|mean singular value over layers 2..L - paper_value| per seed (layer 1 is not square)."""

    def measure(study: Study) -> Measurement:
        sv = _at_step0(study, init, "jacobian_sv_mean")
        mean_sv = sv[[c for c in sv.columns if c > 1]].mean(axis=1)
        return of_seeds((mean_sv - paper_value).abs(), mean_singular_value=float(mean_sv.mean()), paper=paper_value)

    return measure


def _test_error(study: Study, act: str, init: str, data: str) -> pd.Series:
    return 100 * (1 - final_values(study, cell(study, act=act, init=init, data=data), "test", "accuracy"))


def _tanh_normalized_better(data: str | None):
    def measure(study: Study) -> Measurement:
        name = data or _mnist(study)
        return difference(_test_error(study, "tanh", "xavier", name), _test_error(study, "tanh", "standard", name))

    return measure


def _sigmoid_worst(data: str | None):
    def measure(study: Study) -> Measurement:
        name = data or _mnist(study)
        others = {row: _test_error(study, *ARMS[row], name) for row in TABLE_1.index if row != "Sigmoid"}
        worst_other = max(others, key=lambda row: others[row].mean())
        return difference(
            _test_error(study, "sigmoid", "standard", name),
            others[worst_other],
            **{f"runner-up is {worst_other}": float(others[worst_other].mean())},
        )

    return measure


CLAIMS = (
    Claim(
        "sigmoid_top_saturates",
        "With sigmoid (standard init), the top hidden layer's mean activation falls toward 0 early in training.",
        "§3.1, fig. 2: the top layer quickly saturates at 0. Threshold: below half the sigmoid's midpoint 0.5 within the first half of training.",
        "lowest mean activation of the top hidden layer in the first half of training",
        BELOW,
        0.25,
        _sigmoid_top_layer,
    ),
    Claim(
        "sigmoid_lower_layers_stay",
        "With sigmoid (standard init), the lower hidden layers stay near or above 0.5 meanwhile.",
        "§3.1, fig. 2: lower layers keep a mean around 0.5. Threshold: no lower layer's mean activation drops below 0.4 in the first half of training.",
        "lowest mean activation over hidden layers 1..L-1 in the first half of training",
        ABOVE,
        0.4,
        _sigmoid_lower_layers,
    ),
    Claim(
        "standard_init_gradients_shrink",
        "With the standard init (tanh), back-propagated gradients ∂L/∂z shrink on their way down to the input.",
        "§4.2.2, fig. 7 (top): the gradients' spread decreases from the top layer to the bottom. Threshold: layer 1's δ std below half of the top layer's, at step 0.",
        "δ std of layer 1 / δ std of layer L at step 0 (tanh, standard init)",
        BELOW,
        0.5,
        _delta_ratio("standard"),
    ),
    Claim(
        "normalized_init_gradients_flat",
        "With the normalized init (tanh), the back-propagated gradients stay much flatter across layers.",
        "§4.2.2, fig. 7 (bottom). Threshold: layer 1's δ std keeps more than half of the top layer's, at step 0.",
        "δ std of layer 1 / δ std of layer L at step 0 (tanh, normalized init)",
        ABOVE,
        0.5,
        _delta_ratio("xavier"),
    ),
    Claim(
        "weight_gradients_constant",
        "The weight gradients stay roughly constant across layers even with the standard init.",
        "§4.2.2, fig. 8: 'even though with standard initialization the back-propagated gradients get smaller, the weight gradients do not'. "
        "Threshold: the largest ‖∂L/∂W_l‖ over hidden layers 2..L is less than 2x the smallest at step 0 (tanh, standard init).",
        "max/min of ‖∂L/∂W_l‖ over layers 2..L at step 0",
        BELOW,
        2.0,
        _weight_gradient_spread,
    ),
    Claim(
        "jacobian_standard_about_0.5",
        "The layer Jacobians' mean singular value is about 0.5 with the standard init.",
        "§4.2.2: 'the average singular value ... 0.5' for the standard init (tanh). Threshold: within 0.1 of 0.5, averaged over layers 2..L at step 0.",
        "|mean singular value - 0.5|",
        BELOW,
        0.1,
        _jacobian("standard", 0.5),
    ),
    Claim(
        "jacobian_normalized_about_0.8",
        "The layer Jacobians' mean singular value is about 0.8 with the normalized init.",
        "§4.2.2: 0.8 for the normalized init (tanh). Threshold: within 0.1 of 0.8, averaged over layers 2..L at step 0.",
        "|mean singular value - 0.8|",
        BELOW,
        0.1,
        _jacobian("xavier", 0.8),
    ),
    Claim(
        "tanh_normalized_better_shapeset",
        "The normalized init gives tanh a lower test error (Shapeset).",
        "Table 1: Tanh 27.15% vs Tanh N 15.60% on Shapeset. Threshold: error difference N - standard below 0.",
        "test error % (tanh, normalized) - (tanh, standard), Shapeset",
        BELOW,
        0.0,
        _tanh_normalized_better("shapeset"),
    ),
    Claim(
        "tanh_normalized_better_mnist",
        "The normalized init gives tanh a lower test error (MNIST).",
        "Table 1: Tanh 1.76% vs Tanh N 1.64% on MNIST. Threshold: error difference N - standard below 0.",
        "test error % (tanh, normalized) - (tanh, standard), MNIST",
        BELOW,
        0.0,
        _tanh_normalized_better(None),
    ),
    Claim(
        "sigmoid_worst_shapeset",
        "Sigmoid has the worst test error (Shapeset).",
        "Table 1: Sigmoid 82.61% on Shapeset, the worst row. Threshold: sigmoid's error minus the worst other Table-1 arm's above 0.",
        "test error % sigmoid - worst other arm, Shapeset",
        ABOVE,
        0.0,
        _sigmoid_worst("shapeset"),
    ),
    Claim(
        "sigmoid_worst_mnist",
        "Sigmoid has the worst test error (MNIST).",
        "Table 1: Sigmoid 2.21% on MNIST, the worst row. Threshold: sigmoid's error minus the worst other Table-1 arm's above 0.",
        "test error % sigmoid - worst other arm, MNIST",
        ABOVE,
        0.0,
        _sigmoid_worst(None),
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Our test error (%) in Table 1's layout, "mean [95% CI]" over seeds, plus the Sigmoid N row."""
    columns = {"Shapeset": "shapeset", "MNIST": _mnist(study)}
    rows = {}
    for row, (act, init) in ARMS.items():
        rows[row] = {}
        for column, data in columns.items():
            try:
                rows[row][column] = f"{interval_of(_test_error(study, act, init, data)):.2f}"
            except MissingCells:
                rows[row][column] = "missing"
    return pd.DataFrame(rows).T


FIGURES = (
    FigureSpec(
        "fig2_sigmoid_activations",
        "Mean and std of each layer's sigmoid activations over training, standard init (their fig. 2): "
        "the top layer saturates toward 0.",
        plots.activation_over_training,
        ("layers",),
        ("act_mean", "act_std"),
        where={"act": "sigmoid", "init": "standard"},
    ),
    FigureSpec(
        "fig6_7_tanh_histograms",
        "Histograms of activations and δ per layer for tanh on Shapeset at the start and the end, "
        "standard vs normalized init (their figs. 6-7).",
        plots.layer_histograms,
        ("hists",),
        where={"act": "tanh", "data": FIGURE_DATA},
    ),
    FigureSpec(
        "fig7_8_gradient_profile",
        "δ std and ‖∂L/∂W‖ per layer for tanh on Shapeset, standard vs normalized init (their figs. 7-8).",
        plots.gradient_profile,
        ("layers",),
        ("delta_std", "grad_norm"),
        where={"act": "tanh", "data": FIGURE_DATA},
    ),
    FigureSpec("learning_curves", "Training loss and test accuracy of every arm.", plots.learning_curves),
)

PAPER = Paper(
    name="glorot2010",
    citation="Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks, AISTATS (PMLR 9)",
    claims=CLAIMS,
    paper_table=TABLE_1,
    paper_table_source="Table 1, test error (%) with 5 hidden layers; N = normalized init. Ours: mean [95% t CI] over seeds; Sigmoid N is in our grid only.",
    ours_table=ours_table,
    figures=FIGURES,
    setup="5 hidden layers of 1000 units, SGD with minibatches of 10, learning rate tuned per setup, Shapeset-3x2 (unlimited stream) and MNIST, trained to convergence.",
    differences={
        "cpu": "200 units, one fixed learning rate (0.1), 5,000 updates, 10,000 generated Shapeset images and mnist5k (5,000 MNIST digits) instead of MNIST.",
        "paper": "1000 units and full MNIST as in the paper; one fixed learning rate (0.1) instead of a tuned one, 300,000 updates, 10,000 Shapeset images.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
