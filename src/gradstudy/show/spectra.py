"""Figures of the input-output Jacobian's spectrum (``stats.extra=[jacobian_spectrum]``): its mean
and spread across layers with the free-probability prediction dashed, and its density per cell."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from gradstudy.analysis.predictions import Predictions, predicted_spectra
from gradstudy.cells.spectrum import HUTCHINSON, SPECTRUM_BINS, SPECTRUM_QUANTITY
from gradstudy.schema import KEY, LAYER_COLUMNS
from gradstudy.show.encoding import WRAP, Keys, encode
from gradstudy.show.lines import line_figure
from gradstudy.show.plot import PanelRow, Plot
from gradstudy.show.profiles import profile
from gradstudy.store.study import Study


def spectrum_layers(spectra: pd.DataFrame) -> pd.DataFrame:
    """The spectrum's rows as layer statistics: ``sv2_mean``, ``sv2_max`` and ``sv2_nvar``, the
    variance over the mean squared (where the method estimated a variance)."""
    wide = spectra.pivot_table(index=[*KEY, "seed", "step", "layer"], columns="stat", values="value").reset_index()
    nvar = wide.dropna(subset=["sv2_var"]).assign(value=lambda f: f["sv2_var"] / f["sv2_mean"] ** 2, stat="sv2_nvar")
    kept = spectra[spectra["stat"].isin(["sv2_mean", "sv2_max"])]
    return pd.concat([kept, nvar], ignore_index=True)[[*KEY, *LAYER_COLUMNS]]


def spectrum_profile(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    predictions: Predictions | None = None,
) -> Plot:
    """The mean of the squared singular values of dh_l/dx and their spread (variance / mean^2)
    against layer, at the start and the end: dynamical isometry keeps the mean at 1 and the spread
    small at every depth (Pennington et al. 2017). The start carries the free-probability
    prediction dashed."""
    layers = spectrum_layers(study.spectra)
    stats = [("sv2_mean", "mean of σ² of ∂h_l/∂x", True), ("sv2_nvar", "spread of σ²:\nvariance / mean²", True)]
    predicted = predicted_spectra(study) if predictions is None else predictions.of(study)
    plot = profile(
        dataclasses.replace(study, layers=layers),
        stats,
        "Input-output Jacobian spectrum across layers",
        hue,
        style,
        col,
        row,
        wrap,
        predicted,
        theory="free-probability prediction at step 0 (gradstudy.theory.jacobian_spectrum)",
        legend="free-probability prediction (step 0)",
    )
    estimated = study.spectra.loc[study.spectra["method"] == HUTCHINSON, "cell"].unique()
    if len(estimated):
        plot.notes.append(
            f"{len(estimated)} cell(s) ({', '.join(estimated)}) are Hutchinson estimates (cells.spectrum): the mean at "
            "every layer, the spread at the last layer only."
        )
    return plot


def spectrum_density(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """The density of the squared singular values of the last hidden layer's dh_L/dx at each
    measured step (the exact method's fixed log bins; fraction per bin, mean over seeds): a narrow
    peak at 1 is dynamical isometry, a spread over decades is its absence."""
    hists = study.hists[study.hists["quantity"] == SPECTRUM_QUANTITY]
    hists = hists[hists["layer"] == hists.groupby(KEY)["layer"].transform("max")]
    totals = hists.groupby([*KEY, "seed", "step"])["count"].transform("sum")
    bins = hists.assign(value=hists["count"] / totals)[hists["region"] == "bin"]
    bins = bins.assign(center=np.sqrt(bins["bin_left"] * bins["bin_right"]), measure="step " + bins["step"].astype(str))
    measures = [
        PanelRow(f"step {step}", f"fraction per bin,\nlast hidden layer, step {step}", log=True)
        for step in sorted(bins["step"].unique())
    ]
    enc = encode(study, bins, hue, style, col, row, wrap)
    plot = line_figure(
        study,
        bins,
        measures,
        "center",
        "squared singular value σ² of ∂h_L/∂x (log bins)",
        "Input-output Jacobian spectrum density",
        enc,
        band=False,
        divergence=None,
        log_x=True,
        drop_zero=True,
        clip=False,
    )
    binned = hists.assign(inside=hists["region"] == "bin", counted=hists["count"])
    binned = binned[binned["counted"] > 0].groupby([*KEY, "step"])["inside"].any()
    outside = sorted(set(binned[~binned].index.get_level_values("cell")))
    if outside:
        lo, hi = SPECTRUM_BINS.lo, SPECTRUM_BINS.hi
        plot.notes.append(
            f"Not drawn: {len(outside)} cell(s) ({', '.join(outside)}) have every σ² outside the bins "
            f"[{lo:g}, {hi:g}] at some step (see the region counts in hists.parquet)."
        )
    return plot
