"""Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, "The shattering gradients problem".

Preset ``conf/experiment/balduzzi2017.yaml``: the plain MLP against the residual MLP, both ReLU with
batch norm and He init, at depth 2, 10, 30 and 50, with ``stats.extra=[shattering]``: per layer,
the mean correlation of dL/dz_l between neighbouring points of a line of inputs. The claims read
layer 1, the gradient after the whole net has been back-propagated through, at step 0.

Thresholds, fixed before the first cpu run after one probe (width 64, 2 seeds, one step; layer 1
read 0.99, 0.73, -0.02, -0.01 for the plain net at depth 2, 10, 30, 50 and 0.99, 0.89, 0.79, 0.73
for the residual net): at depth 50 the plain net is "shattered" below ``SHATTERED`` = 0.2 and the
residual net "correlated" above ``CORRELATED`` = 0.5; "decays much faster" is a drop from depth 2 to
50 larger for the plain net than for the residual one by more than ``FASTER`` = 0.3.
"""

from __future__ import annotations

import pandas as pd

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
    seeds_table,
)
from gradstudy.schema import CellKey as Key
from gradstudy.show import plots
from gradstudy.show.figures import FigureSpec
from gradstudy.store.study import Study

DEPTHS = (2, 10, 30, 50)
MODELS = {"mlp": "plain", "resmlp": "residual"}
SHATTERED, CORRELATED, FASTER = 0.2, 0.5, 0.3

PAPER_TABLE = pd.DataFrame(
    {
        "gradient correlation between neighbouring inputs": [
            "decays exponentially with depth (white noise by ~20-50 layers)",
            "decays sublinearly with depth (with batch norm)",
        ]
    },
    index=list(MODELS.values()),
)


def first_layer_correlation(study: Study, cell_id: Key) -> pd.Series:
    """Per seed: layer 1's neighbour correlation of dL/dz at step 0."""
    return layer_values(study, cell_id, "shattering").xs(0, level="step")[1]


def _at(model: str, depth: int):
    def measure(study: Study) -> Measurement:
        return of_seeds(first_layer_correlation(study, cell(study, model=model, model__depth=depth)), depth=depth)

    return measure


def _drop(study: Study, model: str) -> pd.Series:
    shallow, deep = (
        first_layer_correlation(study, cell(study, model=model, model__depth=d)) for d in (min(DEPTHS), max(DEPTHS))
    )
    return (shallow - deep).dropna()  # seed i of one cell against seed i of the other: independent draws


def _faster(study: Study) -> Measurement:
    return difference(_drop(study, "mlp"), _drop(study, "resmlp"))


_SOURCE = "§2-3 and figs. 1-3: the correlation of gradients at neighbouring inputs, layer 1 (the input side), at init."

CLAIMS = (
    Claim(
        "plain_shattered_at_50",
        "The gradient of a 50-layer plain net (ReLU, batch norm) has shattered: neighbouring inputs' gradients are nearly uncorrelated.",
        f"{_SOURCE} Threshold: mean neighbour correlation below 0.2.",
        "layer-1 neighbour correlation of dL/dz, step 0, plain, depth 50",
        BELOW,
        SHATTERED,
        _at("mlp", 50),
    ),
    Claim(
        "residual_correlated_at_50",
        "The gradient of a 50-block residual net (ReLU, batch norm) stays correlated between neighbouring inputs.",
        f"{_SOURCE} Threshold: mean neighbour correlation above 0.5.",
        "layer-1 neighbour correlation of dL/dz, step 0, residual, depth 50",
        ABOVE,
        CORRELATED,
        _at("resmlp", 50),
    ),
    Claim(
        "plain_decays_faster",
        "The correlation decays much faster with depth for the plain net than for the residual net.",
        f"{_SOURCE} Threshold: (correlation at depth 2 minus at depth 50), plain minus residual, above 0.3 (Welch's interval).",
        "drop of layer-1 neighbour correlation from depth 2 to 50, plain - residual, step 0",
        ABOVE,
        FASTER,
        _faster,
    ),
)


def ours_table(study: Study) -> pd.DataFrame:
    """Layer-1 neighbour correlation at step 0 (mean [CI] over seeds) per net and depth."""
    nets = {label: {"model": model} for model, label in MODELS.items()}
    depths = {f"depth {d}": {"model__depth": d} for d in DEPTHS}
    return seeds_table(study, nets, depths, first_layer_correlation)


PAPER = Paper(
    name="balduzzi2017",
    citation="Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, The shattering gradients problem: if resnets are the answer, then what is the question?, ICML 2017, arXiv 1702.08591",
    claims=CLAIMS,
    paper_table=PAPER_TABLE,
    paper_table_source="§2-3, figs. 1-3: what they report, qualitatively.",
    ours_table=ours_table,
    figures=(
        FigureSpec(
            "shattering_profile",
            "Neighbour correlation of dL/dz per layer at the start and the end, one panel per depth, plain against residual.",
            plots.shattering_profile,
            ("layers",),
            ("shattering",),
            options={"hue": ["model"], "col": ["model.depth"]},
            channels=(),
        ),
        FigureSpec(
            "gradient_profile",
            "δ std and ‖∂L/∂W‖ per layer at the start and the end, one panel per depth, plain against residual.",
            plots.gradient_profile,
            ("layers",),
            ("delta_std", "grad_norm"),
            options={"hue": ["model"], "col": ["model.depth"]},
            channels=(),
        ),
    ),
    setup="Fully connected ReLU nets and resnets (with and without batch norm) of width 200 on one-dimensional inputs; gradients at 256 points of a line.",
    differences={
        "cpu": "MLP and resmlp, width 64, depths 2-50, batch norm and He init, mnist5k, the line between two test images (64 points), 100 SGD steps, 5 seeds; our choices.",
        "paper": "width 200, full MNIST, 1,000 steps; still the line between two images, not the paper's 1-D inputs.",
        "smoke": "16 units and 3 updates: a plumbing check, not a reproduction.",
    },
)
