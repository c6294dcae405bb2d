"""Distributions: percentiles of the pre-activations (whole layers and single units) and the
fixed-bin histograms of activations and back-propagated gradients."""

from __future__ import annotations

import numpy as np

from gradstudy.schema import HIST_QUANTITIES, KEY
from gradstudy.show.encoding import (
    WRAP,
    Keys,
    encode,
)
from gradstudy.show.lines import line_figure, per_step_figure
from gradstudy.show.plot import (
    PanelRow,
    Plot,
)
from gradstudy.store.study import Study

PERCENTILES = {"z_p15": "15th", "z_p50": "50th", "z_p85": "85th"}


def unit_percentiles(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    units: int = 4,
) -> Plot:
    """15th, 50th and 85th percentiles of single units' pre-activation in the last hidden layer over
    training, one row of panels per unit (mean over seeds; Ioffe & Szegedy fig. 1b, c follow one unit)."""
    rows = study.units[study.units["unit"] < units]
    rows = rows[rows["layer"] == rows.groupby(KEY)["layer"].transform("max")]
    data = rows.assign(percentile=rows["stat"].map(PERCENTILES), measure="unit " + rows["unit"].astype(str))
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("percentile",), own_hue="percentile")
    measures = [
        PanelRow(f"unit {j}", f"z percentiles,\nlast hidden layer, unit {j}") for j in sorted(rows["unit"].unique())
    ]
    return per_step_figure(
        study, data, measures, "Single units' pre-activation percentiles over training (mean over seeds)", enc
    )


def preactivation_percentiles(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """15th, 50th and 85th percentiles of the first and last hidden layers' pre-activation over training
    (mean over seeds; Ioffe & Szegedy fig. 1)."""
    rows = study.layers[study.layers["stat"].isin(list(PERCENTILES))]
    depth = rows.groupby(KEY)["layer"].transform("max")
    rows = rows[(rows["layer"] == 1) | (rows["layer"] == depth)]
    data = rows.assign(percentile=rows["stat"].map(PERCENTILES), measure=np.where(rows["layer"] == 1, "first", "last"))
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("percentile",), own_hue="percentile")
    measures = [
        PanelRow("first", "z percentiles,\nfirst hidden layer"),
        PanelRow("last", "z percentiles,\nlast hidden layer"),
    ]
    return per_step_figure(study, data, measures, "Pre-activation percentiles over training (mean over seeds)", enc)


def layer_histograms(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Per-layer histograms of activations and back-propagated gradients (Glorot & Bengio fig. 6 style).

    One line of panels per (quantity, step). The y axis is the fraction of a layer's entries in each
    bin (zeros and out-of-range values count in the total), mean over seeds, on a log scale so that
    tails stay visible. Signed-log bins (δ, unbounded activations) are drawn on a symmetric-log x
    axis whose linear part is the range's smallest magnitude.
    """
    hists = study.hists[study.hists["quantity"].isin(HIST_QUANTITIES)]  # the spectrum's bins have their own figure
    totals = hists.groupby([*KEY, "seed", "step", "layer", "quantity"])["count"].transform("sum")
    bins = hists.assign(value=hists["count"] / totals)[hists["region"] == "bin"]
    bins = bins.assign(
        center=(bins["bin_left"] + bins["bin_right"]) / 2,
        measure=bins["quantity"] + " at step " + bins["step"].astype(str),
    )
    names = {"activation": "activation value", "delta": "δ = B·∂L/∂z"}
    measures = [
        PanelRow(
            f"{quantity} at step {step}", f"fraction per bin\n{names.get(quantity, quantity)}, step {step}", log=True
        )
        for quantity, step in bins[["quantity", "step"]]
        .drop_duplicates()
        .sort_values(["quantity", "step"])
        .itertuples(index=False)
    ]
    enc = encode(study, bins, hue, style, col, row, wrap, own_keys=("layer",), own_hue="layer")
    return line_figure(
        study,
        bins,
        measures,
        "center",
        "bin centre",
        "Activation and back-propagated gradient histograms per layer",
        enc,
        band=False,
        divergence=None,
        signed_log_x=True,
        drop_zero=True,
        clip=False,
    )
