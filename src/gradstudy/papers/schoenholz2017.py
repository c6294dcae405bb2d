"""Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep Information Propagation", section 5, fig. 5.

Preset ``conf/experiment/schoenholz2017.yaml``. The paper's claim is that a random network can be
trained only when its depth is at most a few correlation depth scales xi_c (about 6 xi_c), which
diverge at the order-to-chaos boundary chi1 = 1. The theory side is ``gradstudy.theory``; this
module compares it with the training accuracy each cell reaches in a fixed budget.

Thresholds, fixed before the cpu run (after one 3-cell probe at depth 80, reported in the note of
issue #12): a cell "trains" when its mean final training accuracy over seeds is at least
``TRAINABLE`` = 0.2, twice chance on 10 classes; "near chance" is below it.
"""

from __future__ import annotations

import pandas as pd
from scipy import stats as sps

from gradstudy import theory
from gradstudy.analysis.convergence import final_accuracy
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    Claim,
    Measurement,
    MissingCells,
    Paper,
    cell,
    final_values,
    interval_of,
    of_seeds,
)
from gradstudy.schema import CellStatus
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

#: A cell trains when its mean final training accuracy is at least this (chance: 0.1).
TRAINABLE = 0.2
#: The theory's trainable depth, in correlation depth scales (the paper's fig. 5 white curve).
XI_MULTIPLE = 6
#: The agreement between theory and measurement the grid must reach (fraction of cells).
AGREEMENT = 0.8
BOUNDARY, ORDERED, CHAOTIC = 1.76, 1.0, 4.0

#: Fig. 5 reports a heat map, not numbers: what it shows, qualitatively.
PAPER_TABLE = pd.DataFrame(
    {
        "shows": [
            "trainable up to about 6 xi_c, deepest at the critical sigma_w2",
            "untrainable beyond 6 xi_c, on both sides",
        ]
    },
    index=["depth below 6 xi_c", "depth above 6 xi_c"],
)


def _sigma_b2(study: Study) -> float:
    return float(study.cells["init.sigma_b2"].dropna().iloc[0])


def _deepest(study: Study) -> int:
    depths = study.cells.loc[study.cells["status"] == CellStatus.COMPLETE, "model.depth"]
    if depths.empty:
        raise MissingCells("no complete cell")
    return int(depths.max())


def _accuracy_at_deepest(sigma_w2: float):
    def measure(study: Study) -> Measurement:
        depth = _deepest(study)
        accuracy = final_values(study, cell(study, init__sigma_w2=sigma_w2, model__depth=depth), "train", "accuracy")
        return of_seeds(
            accuracy, depth=depth, six_xi_c=XI_MULTIPLE * theory.depth_scales("tanh", sigma_w2, _sigma_b2(study)).xi_c
        )

    return measure


def agreement_table(study: Study) -> pd.DataFrame:
    """One row per complete cell: sigma_w2, depth, mean final training accuracy, 6 xi_c, and whether
    trainability measured and predicted agree."""
    cells = study.cells[study.cells["status"] == CellStatus.COMPLETE].merge(final_accuracy(study), on=["study", "cell"])
    sigma_b2 = _sigma_b2(study)
    scale = {w: XI_MULTIPLE * theory.depth_scales("tanh", w, sigma_b2).xi_c for w in cells["init.sigma_w2"].unique()}
    table = pd.DataFrame(
        {
            "sigma_w2": cells["init.sigma_w2"],
            "depth": cells["model.depth"],
            "train_accuracy": cells["accuracy"],
            "six_xi_c": cells["init.sigma_w2"].map(scale),
        }
    )
    table["predicted_trainable"] = table["depth"] < table["six_xi_c"]
    table["trains"] = table["train_accuracy"] >= TRAINABLE
    table["agree"] = table["predicted_trainable"] == table["trains"]
    return table.sort_values(["sigma_w2", "depth"]).reset_index(drop=True)


def _agreement(study: Study) -> Measurement:
    """The fraction of cells whose trainability theory predicts, with its Clopper-Pearson 95% interval."""
    table = agreement_table(study)
    if table.empty:
        raise MissingCells("no complete cell")
    n, k = len(table), int(table["agree"].sum())
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return Measurement(k / n, ci.low, ci.high, {"cells": n, "agree": k})


CLAIMS = (
    Claim(
        "boundary_trains_deepest",
        "At the deepest depth of the grid, the network at the order-to-chaos boundary (sigma_w2 = 1.76) trains.",
        "§5 and fig. 5: the trainable depth diverges at chi1 = 1. Threshold: mean final training accuracy at least 0.2 (twice chance).",
        "final training accuracy, sigma_w2 = 1.76, deepest depth",
        ABOVE,
        TRAINABLE,
        _accuracy_at_deepest(BOUNDARY),
    ),
    Claim(
        "ordered_deepest_at_chance",
        "At the deepest depth, the ordered-phase network (sigma_w2 = 1.0, 6 xi_c = 21.8) stays near chance.",
        "§5 and fig. 5. Threshold: mean final training accuracy below 0.2.",
        "final training accuracy, sigma_w2 = 1.0, deepest depth",
        BELOW,
        TRAINABLE,
        _accuracy_at_deepest(ORDERED),
    ),
    Claim(
        "chaotic_deepest_at_chance",
        "At the deepest depth, the chaotic-phase network (sigma_w2 = 4.0, 6 xi_c = 41.9) stays near chance.",
        "§5 and fig. 5. Threshold: mean final training accuracy below 0.2.",
        "final training accuracy, sigma_w2 = 4.0, deepest depth",
        BELOW,
        TRAINABLE,
        _accuracy_at_deepest(CHAOTIC),
    ),
    Claim(
        "six_xi_c_separates",
        "Across the grid, a cell trains when its depth is below 6 xi_c and does not when above.",
        "§5: 'networks can be trained when L < 6 xi_c'. A cell trains when its mean final training accuracy is at least 0.2. "
        "Threshold: the fraction of cells where measurement and prediction agree, above 0.8 (Clopper-Pearson 95% interval).",
        "fraction of cells where trains == (depth < 6 xi_c)",
        ABOVE,
        AGREEMENT,
        _agreement,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Final training accuracy (mean [CI] over seeds) per sigma_w2 and depth, with 6 xi_c per column."""
    table = agreement_table(study)
    sigma_b2 = _sigma_b2(study)
    out = {}
    for sigma_w2 in sorted(table["sigma_w2"].unique()):
        column = (
            f"σ_w² = {sigma_w2:g} (6ξ_c = {XI_MULTIPLE * theory.depth_scales('tanh', sigma_w2, sigma_b2).xi_c:.3g})"
        )
        out[column] = {}
        for depth in sorted(table["depth"].unique()):
            try:
                c = cell(study, init__sigma_w2=sigma_w2, model__depth=depth)
            except MissingCells:
                out[column][f"depth {depth}"] = "missing"
                continue
            out[column][f"depth {depth}"] = str(interval_of(final_values(study, c, "train", "accuracy")))
    return pd.DataFrame(out)


PAPER = Paper(
    name="schoenholz2017",
    citation="Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, Deep Information Propagation, ICLR 2017, arXiv 1611.01232",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="Fig. 5 (MNIST and CIFAR-10 heat maps of training accuracy over sigma_w2 x depth, with 6 xi_c drawn over them).",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "fig5_phase_diagram",
            "Final training accuracy over sigma_w2 x depth (tanh, sigma_b2 = 0.05), with 6 xi_c dashed (their fig. 5).",
            plots.phase_diagram,
            channels=(),
        ),
        FigureSpec(
            "gradient_profile",
            "δ std and ‖∂L/∂W‖ per layer at the start and the end, one panel per depth, coloured by sigma_w2.",
            plots.gradient_profile,
            ("layers",),
            ("delta_std", "grad_norm"),
            options={"hue": ["init.sigma_w2"], "col": ["model.depth"]},
            channels=(),
        ),
    ),
    setup="Fully connected tanh networks of many depths, weights N(0, sigma_w2/N), biases N(0, sigma_b2), trained with SGD on MNIST and CIFAR-10.",
    differences={
        "cpu": "mnist5k, width 128, depths 10-80, 500 plain SGD steps (lr 0.01, batch 64), 3 seeds; our choices, not the paper's exact setup.",
        "paper": "full MNIST, width 300, depths 10-80, 5,000 plain SGD steps; our choices, not verified against the paper's exact setup.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
