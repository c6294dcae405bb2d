"""Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through dynamical isometry".

Preset ``conf/experiment/pennington2017.yaml``: a plain MLP (width 200, no norm) at depth 10, 50
and 200, tanh at criticality with a small q* and ReLU at chi_1 = 1, each with orthogonal and
Gaussian weights (arms ``iso_*``), with ``stats.extra=[jacobian_spectrum]``: the squared singular
values of every layer's dh_l/dx on 4 training examples, exact, at step 0 and at the end. The
claims read the last hidden layer at step 0, and the test accuracy curves.

Thresholds, fixed before the first cpu run after one probe (the two tanh arms at depth 200, 3
seeds, 100 steps; orthogonal: variance of sigma^2 0.082, mean 0.240, test accuracy 0.85 at step
100; Gaussian: variance 1030, mean 1.12, test accuracy <= 0.27) and the free-probability
prediction (variance 0.06, 0.05, 0.11 for orthogonal tanh at depth 10, 50, 200; 2.3, 4.5, 16.5 for
Gaussian tanh; 10, 50, 200 and 19, 99, 399 for orthogonal and Gaussian ReLU):

* "grows with depth": the variance at depth 200 over the variance at depth 10 above ``GROWS`` = 3
  (the prediction: 7, 20 and 20);
* "stays bounded": orthogonal tanh's variance at depth 200 below ``BOUNDED`` = 0.5;
* "matches the prediction": for every arm at depth 10 and 50 (width 200: at depth 200 the
  finite-width corrections, of order depth / width, are no longer small), |log(measured /
  predicted)| of the mean below ``MEAN_TOLERANCE`` = log 1.25 and of the variance below
  ``VAR_TOLERANCE`` = log 2, the worst cell of each seed;
* "trains faster": at depth 200, orthogonal tanh reaches ``TARGET`` = 0.5 test accuracy in fewer
  steps than Gaussian tanh (lower medians, bootstrap interval below 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.analysis.predictions import predicted_spectra
from gradstudy.cells.statistics import Summary
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    of_seeds,
    of_seeds_log,
    ratio,
    seeds_table,
    steps_earlier,
)
from gradstudy.schema import CellKey as Key
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study, rows_of

DEPTHS = (10, 50, 200)
ARMS = {
    "iso_orth_tanh": "tanh, orthogonal",
    "iso_gauss_tanh": "tanh, Gaussian",
    "iso_orth_relu": "ReLU, orthogonal",
    "iso_gauss_relu": "ReLU, Gaussian",
}
GROWS, BOUNDED, TARGET = 3.0, 0.5, 0.5
MEAN_TOLERANCE, VAR_TOLERANCE = float(np.log(1.25)), float(np.log(2.0))
#: The depths at which the measured moments are held to the prediction.
MATCHED_DEPTHS = (10, 50)

PAPER_TABLE = pd.DataFrame(
    {
        "spread of the Jacobian's squared singular values with depth": [
            "stays O(1) (dynamical isometry)",
            "grows linearly",
            "grows linearly",
            "grows linearly",
        ],
        "training speed": ["fastest", "slower", "slower", "slower"],
    },
    index=list(ARMS.values()),
)


def spectrum_at(study: Study, cell_id: Key, stat: str, step: int = 0) -> pd.Series:
    """Per seed, the last hidden layer's ``stat`` (``cells.spectrum.SPECTRUM_STATS``) at ``step``."""
    rows = rows_of(study.spectra, cell_id)
    rows = rows[(rows["stat"] == stat) & (rows["step"] == step)]
    if rows.empty:
        raise MissingCells(f"no {stat} of the Jacobian spectrum at step {step} in {cell_id}")
    return rows[rows["layer"] == rows["layer"].max()].set_index("seed")["value"]


def _variance(study: Study, cell_id: Key) -> pd.Series:
    return spectrum_at(study, cell_id, "sv2_var")


def _grows(arm: str):
    def measure(study: Study) -> Measurement:
        deep, shallow = (_variance(study, cell(study, arm=arm, model__depth=d)) for d in (max(DEPTHS), min(DEPTHS)))
        return ratio(deep, shallow)

    return measure


def _bounded(study: Study) -> Measurement:
    return of_seeds_log(_variance(study, cell(study, arm="iso_orth_tanh", model__depth=max(DEPTHS))))


def _log_error(moment: str):
    """Per seed, the largest |log(measured / predicted)| of ``moment`` (mean or var) over every arm at
    ``MATCHED_DEPTHS``."""

    def measure(study: Study) -> Measurement:
        predicted = predicted_spectra(study).layers
        errors = []
        for arm in ARMS:
            for depth in MATCHED_DEPTHS:
                key = cell(study, arm=arm, model__depth=depth)
                own = predicted[(predicted["study"] == key[0]) & (predicted["cell"] == key[1])]
                own = own[own["layer"] == depth].set_index("stat")["value"]
                if own.empty:
                    raise MissingCells(f"no free-probability prediction for {key}")
                mean = own["sv2_mean"]
                expected = mean if moment == "mean" else own["sv2_nvar"] * mean**2
                errors.append(np.abs(np.log(spectrum_at(study, key, f"sv2_{moment}") / expected)))
        worst = pd.concat(errors, axis=1).max(axis=1)
        return of_seeds(worst, cells=len(errors))

    return measure


def _trains_faster(study: Study) -> Measurement:
    cells = {name: cell(study, arm=arm, model__depth=max(DEPTHS)) for arm, name in ARMS.items() if "tanh" in arm}
    return steps_earlier(study, cells, TARGET)


_SOURCE = "§2-4 and figs. 2-4: the squared singular values of the input-output Jacobian at init, last hidden layer."

CLAIMS = (
    *(
        Claim(
            f"spread_grows_{arm.removeprefix('iso_')}",
            f"{label}: the variance of the Jacobian's squared singular values grows with depth.",
            f"{_SOURCE} Threshold: variance at depth 200 over depth 10 above {GROWS:g} (Welch's interval of the logs).",
            f"variance of σ² of ∂h_L/∂x at step 0, depth 200 / depth 10, {label}",
            ABOVE,
            GROWS,
            _grows(arm),
        )
        for arm, label in ARMS.items()
        if arm != "iso_orth_tanh"
    ),
    Claim(
        "spread_bounded_orth_tanh",
        "tanh, orthogonal, at small q*: the variance of the squared singular values stays small at depth 200 (dynamical isometry).",
        f"{_SOURCE} Threshold: variance below {BOUNDED:g} at depth 200 (geometric mean over seeds).",
        "variance of σ² of ∂h_L/∂x at step 0, depth 200, tanh, orthogonal",
        BELOW,
        BOUNDED,
        _bounded,
    ),
    Claim(
        "mean_matches_free_probability",
        "The mean squared singular value matches the free-probability prediction.",
        f"{_SOURCE} Threshold: every arm at depth 10 and 50, the worst |log(measured / predicted)| per seed below log 1.25.",
        "max over 8 cells of |log(mean σ² / predicted)|, step 0",
        BELOW,
        MEAN_TOLERANCE,
        _log_error("mean"),
    ),
    Claim(
        "variance_matches_free_probability",
        "The variance of the squared singular values matches the free-probability prediction.",
        f"{_SOURCE} Threshold: every arm at depth 10 and 50, the worst |log(measured / predicted)| per seed below log 2.",
        "max over 8 cells of |log(variance of σ² / predicted)|, step 0",
        BELOW,
        VAR_TOLERANCE,
        _log_error("var"),
    ),
    Claim(
        "orthogonal_tanh_trains_faster",
        "At depth 200, tanh with orthogonal weights (isometry) trains faster than with Gaussian weights.",
        f"Fig. 4: test accuracy against step. Threshold: steps to {TARGET:g} test accuracy, orthogonal minus Gaussian "
        "(lower medians, bootstrap 95% interval), below 0.",
        f"steps to {TARGET:g} test accuracy, tanh orthogonal - tanh Gaussian, depth 200",
        BELOW,
        0.0,
        _trains_faster,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """The variance of σ² at the last hidden layer at step 0 (mean [CI] over seeds, the interval on the log scale), per arm and depth."""
    arms = {label: {"arm": arm} for arm, label in ARMS.items()}
    depths = {f"depth {d}": {"model__depth": d} for d in DEPTHS}
    return seeds_table(study, arms, depths, _variance, Summary.POSITIVE)


_BY_DEPTH = {"hue": ["arm"], "col": ["model.depth"]}


def spectrum_figures(options: dict[str, list[str]]) -> tuple[FigureSpec, ...]:
    """The Jacobian spectrum's figures of a preset, with the encoding ``options``: its mean and spread
    per layer, and the last layer's density."""
    return (
        FigureSpec(
            "jacobian_spectrum",
            "Mean and spread (variance / mean²) of σ² of ∂h_l/∂x per layer at the start and the end, one panel per "
            "depth, the free-probability prediction dashed at the start where it applies.",
            plots.spectrum_profile,
            ("spectra",),
            options=options,
            channels=(),
        ),
        FigureSpec(
            "jacobian_spectrum_density",
            "Density of the last hidden layer's σ² at the start and the end, one panel per depth (Pennington et al. fig. 2).",
            plots.spectrum_density,
            ("hists",),
            options=options,
            channels=(),
            quantities=("jacobian_sv2",),
        ),
    )


PAPER = Paper(
    name="pennington2017",
    citation="Pennington, Schoenholz & Ganguli 2017, Resurrecting the sigmoid in deep learning through dynamical isometry: theory and practice, NeurIPS 2017, arXiv 1711.04735",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="§2-4, figs. 2-4: what they report, qualitatively.",
    ours_table=ours_table,
    figures=(
        *spectrum_figures(_BY_DEPTH),
        FigureSpec(
            "learning_curves",
            "Training loss and test accuracy against step, one panel per depth (fig. 4).",
            plots.learning_curves,
            options=_BY_DEPTH,
            channels=(),
        ),
    ),
    setup="Fully connected tanh and ReLU nets of width 400-1000 on CIFAR-10, depths up to 200, on the critical line "
    "(chi_1 = 1) at several q*, orthogonal against Gaussian weights; spectra from free probability checked against "
    "random products; SGD and Adam.",
    differences={
        "cpu": "width 200, mnist5k, depths 10/50/200, one q* (0.028), spectra on 4 training examples, 100 SGD steps at "
        "lr 0.01, 3 seeds; our choices.",
        "paper": "width 400 on CIFAR-10 (the spectrum is then a Hutchinson estimate: no density), 2,000 steps, 5 seeds.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
