"""Xiao, Bahri, Sohl-Dickstein, Schoenholz & Pennington 2018, "Dynamical Isometry and a Mean Field Theory of CNNs".

Preset ``conf/experiment/xiao2018.yaml``: a plain tanh CNN (circular padding, no norm, no skip
connections) at criticality, delta-orthogonal against Gaussian kernels (arms ``cnn_delta_orth``,
``cnn_gauss``), at three depths, with ``stats.extra=[jacobian_spectrum]``. The claims read the
final test accuracy and the last hidden layer's Jacobian spectrum at step 0.

Thresholds, fixed before the first cpu run after three probes on 8x8 digits (2 seeds each; chance
0.1): at depth 128 with 8 channels and raw pixels, delta-orthogonal did not train at all (its first
convolution's centre tap saw one pixel: the first layer is now an isometry from patches); at depth
128, 16 channels, standardized pixels, 100 steps at lr 0.02, delta-orthogonal reached 0.18 and 0.21
test accuracy, Gaussian 0.13 and 0.15, and the variance of sigma^2 at step 0 read 2.26 at layer 16
and 2.27 at layer 128 for delta-orthogonal against 3.5 and 111 for Gaussian; at depth 32, 150
steps at lr 0.02 and 0.1, both arms ended between 0.15 and 0.29. On 2 cores the CNNs train far
less than the paper's, so the training claims keep the paper's sense and may well fail at the cpu
budget (60 steps of 12 channels: the run must fit in 10 minutes on 2 cores); the spectrum claims
carry the cpu evidence:

* "trains at the deepest depth": delta-orthogonal's test accuracy at the deepest depth above ``TRAINS`` = 0.5;
* "Gaussian's accuracy falls with depth below it": Gaussian at the deepest minus the shallowest
  depth below -``FALLS`` = -0.1, and Gaussian minus delta-orthogonal at the deepest depth below -``FALLS``;
* "the spectrum": the variance of sigma^2 at step 0, deepest over shallowest depth, above
  ``SPREADS`` = 3 for Gaussian kernels and below ``STAYS`` = 2 for delta-orthogonal ones.
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
    of_seeds,
    ratio,
    seeds_table,
    test_accuracy,
)
from gradstudy.papers.pennington2017 import spectrum_at, spectrum_figures
from gradstudy.schema import CellKey as Key
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

#: The cpu budget's depths (``budgets.cpu.depths``); the paper budget's are 256, 1024 and 4096.
DEPTHS = (16, 64, 128)
ARMS = {"cnn_delta_orth": "delta-orthogonal", "cnn_gauss": "Gaussian"}
TRAINS, FALLS, SPREADS, STAYS = 0.5, 0.1, 3.0, 2.0

PAPER_TABLE = pd.DataFrame(
    {
        "trainable depth (MNIST, CIFAR-10)": ["10,000 layers", "~100s of layers at best"],
        "spectrum of the input-output Jacobian": ["concentrated near 1 at any depth", "spreads with depth"],
    },
    index=list(ARMS.values()),
)


def _deepest(study: Study) -> int:
    """The study's deepest depth (the budgets differ in depths)."""
    return int(study.cells["model.depth"].max())


def _shallowest(study: Study) -> int:
    return int(study.cells["model.depth"].min())


def _accuracy_at(arm: str):
    def measure(study: Study) -> Measurement:
        depth = _deepest(study)
        return of_seeds(test_accuracy(study, cell(study, arm=arm, model__depth=depth)), depth=depth)

    return measure


def _gauss_falls(study: Study) -> Measurement:
    deep, shallow = (
        test_accuracy(study, cell(study, arm="cnn_gauss", model__depth=d))
        for d in (_deepest(study), _shallowest(study))
    )
    return difference(deep, shallow)


def _gauss_below_delta(study: Study) -> Measurement:
    gauss, delta = (
        test_accuracy(study, cell(study, arm=arm, model__depth=_deepest(study)))
        for arm in ("cnn_gauss", "cnn_delta_orth")
    )
    return difference(gauss, delta)


def _variance(study: Study, cell_id: Key) -> pd.Series:
    return spectrum_at(study, cell_id, "sv2_var")


def _spreads(arm: str):
    """The variance of sigma^2 at step 0, deepest over shallowest depth (Welch's interval of the logs)."""

    def measure(study: Study) -> Measurement:
        deep, shallow = (
            _variance(study, cell(study, arm=arm, model__depth=d)) for d in (_deepest(study), _shallowest(study))
        )
        return ratio(deep, shallow)

    return measure


_SOURCE = "§5 and figs. 1, 5: test accuracy of plain tanh CNNs against depth, delta-orthogonal against Gaussian."
_SPECTRUM = "§3-4: the input-output Jacobian's spectrum at init, last hidden layer."

CLAIMS = (
    Claim(
        "delta_orthogonal_trains_deepest",
        "A plain tanh CNN with delta-orthogonal kernels at criticality trains at the deepest depth.",
        f"{_SOURCE} Threshold: final test accuracy above {TRAINS:g} (chance 0.1).",
        "final test accuracy, delta-orthogonal, deepest depth",
        ABOVE,
        TRAINS,
        _accuracy_at("cnn_delta_orth"),
    ),
    Claim(
        "gaussian_falls_with_depth",
        "With Gaussian kernels at the same critical sigma_w2, test accuracy falls with depth.",
        f"{_SOURCE} Threshold: Gaussian at the deepest minus the shallowest depth below -{FALLS:g} (Welch's interval).",
        "final test accuracy, Gaussian, deepest - shallowest depth",
        BELOW,
        -FALLS,
        _gauss_falls,
    ),
    Claim(
        "gaussian_below_delta_orthogonal",
        "At the deepest depth, Gaussian kernels end below delta-orthogonal ones.",
        f"{_SOURCE} Threshold: Gaussian minus delta-orthogonal below -{FALLS:g} (Welch's interval).",
        "final test accuracy, Gaussian - delta-orthogonal, deepest depth",
        BELOW,
        -FALLS,
        _gauss_below_delta,
    ),
    Claim(
        "gaussian_spectrum_spreads",
        "The Gaussian CNN's Jacobian spectrum spreads with depth.",
        f"{_SPECTRUM} Threshold: variance of σ² at the deepest over the shallowest depth above {SPREADS:g}.",
        "variance of σ² of ∂h_L/∂x at step 0, Gaussian, deepest / shallowest depth",
        ABOVE,
        SPREADS,
        _spreads("cnn_gauss"),
    ),
    Claim(
        "delta_orthogonal_spectrum_stays",
        "The delta-orthogonal CNN's Jacobian spectrum keeps its spread as depth grows (dynamical isometry).",
        f"{_SPECTRUM} Threshold: variance of σ² at the deepest over the shallowest depth below {STAYS:g}.",
        "variance of σ² of ∂h_L/∂x at step 0, delta-orthogonal, deepest / shallowest depth",
        BELOW,
        STAYS,
        _spreads("cnn_delta_orth"),
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final test accuracy (mean [CI] over seeds, logit scale) per arm and depth."""
    arms = {label: {"arm": arm} for arm, label in ARMS.items()}
    depths = {f"depth {d}": {"model__depth": d} for d in sorted(study.cells["model.depth"].dropna().unique())}
    return seeds_table(study, arms, depths, test_accuracy, Summary.FRACTION)


_BY_DEPTH = {"hue": ["arm"], "col": ["model.depth"]}

PAPER = Paper(
    name="xiao2018",
    citation="Xiao, Bahri, Sohl-Dickstein, Schoenholz & Pennington 2018, Dynamical Isometry and a Mean Field Theory of "
    "CNNs: How to Train 10,000-Layer Vanilla Convolutional Neural Networks, ICML 2018, arXiv 1806.05393",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="§5, figs. 1 and 5: what they report, qualitatively.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "learning_curves",
            "Training loss and test accuracy against step, one panel per depth (fig. 1).",
            plots.learning_curves,
            options=_BY_DEPTH,
            channels=(),
        ),
        *spectrum_figures(_BY_DEPTH),
    ),
    setup="Plain tanh CNNs (3x3 kernels, circular padding, no normalization or skip connections, global average "
    "pooling) of up to 10,000 layers on MNIST and CIFAR-10, delta-orthogonal against Gaussian kernels at the critical "
    "sigma_w2, wide layers (256 channels and more), SGD.",
    differences={
        "cpu": "12 channels on scikit-learn's 8x8 digits (standardized) at depth 16, 64 and 128 (2 cores: 20 steps of "
        "3 seeds at depth 64 take ~16 s), 60 SGD steps at lr 0.02, batch 32, 3 seeds; our choices.",
        "paper": "64 channels on MNIST with a stride-2 stem, depth 256, 1,024 and 4,096, 3,000 steps: for a GPU (untried).",
        "smoke": "10 channels and 3 updates: a plumbing check, not a reproduction.",
    },
)
