"""Mean-field predictions for the cells of a study, as tidy rows beside the measured ones.

For each complete cell the theory applies to (``theory.not_applicable``), ``predicted_layers`` gives
the step-0 profile of ``theory.predicted_profile`` for the cell's own config and the inputs its run
recorded (``theory.CellInputs`` in ``meta.json``): the std of z_l (``z_std``), of h_l (``act_std``) and of delta_l (``delta_std``), the latter anchored at the measured step-0
``delta_std`` of the last hidden layer (geometric mean over seeds). Cells it does not apply to are
listed with the reason, so that a report can say so instead of drawing nothing silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gradstudy import theory
from gradstudy.cells.config import ActConfig, InitConfig, ModelConfig, NormConfig
from gradstudy.schema import GROUPS, KEY, THEORY_INPUTS, CellStatus
from gradstudy.store.files import read_meta
from gradstudy.store.study import Study

#: The measured statistic each predicted profile is drawn against.
PREDICTED_STATS = {
    "act_std": "h_std",
    "delta_std": "delta_std",
    "z_std": "z_std",
    "branch_std": "branch_std",
    "branch_ratio": "branch_ratio",
}


@dataclass(frozen=True)
class Predictions:
    """``layers``: study, cell, stat, layer, value (step 0); ``skipped``: study, cell, reason."""

    layers: pd.DataFrame
    skipped: pd.DataFrame

    def of(self, study: Study) -> Predictions:
        """The predictions of ``study``'s cells alone (a part of the study these were made for)."""
        keep = pd.MultiIndex.from_frame(study.cells[KEY])

        def part(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[pd.MultiIndex.from_frame(frame[KEY]).isin(keep)] if len(frame) else frame

        return Predictions(part(self.layers), part(self.skipped))

    def ratios(self) -> pd.DataFrame:
        """The predicted first-to-last hidden layer ratio of ``delta_std`` per cell."""
        delta = self.layers[self.layers["stat"] == "delta_std"]
        if delta.empty:
            return pd.DataFrame(columns=[*KEY, "delta_std_ratio_predicted"])
        ends = delta.sort_values("layer").groupby(KEY)["value"].agg(["first", "last"])
        return (ends["first"] / ends["last"]).rename("delta_std_ratio_predicted").reset_index()


#: The config nodes the theory reads, with their schemas (a cell's canonical config leaves out the
#: keys its options ignore; the schema's defaults fill them back in).
THEORY_NODES = {"init": InitConfig, "act": ActConfig, "norm": NormConfig, "model": ModelConfig}


def cell_config(cell: Mapping[str, Any]) -> DictConfig:
    """The nodes of a cell's config that the theory reads, from its row of ``Study.cells`` (the
    option names in the group columns, the other keys in dotted columns), on the schema's defaults."""
    nodes: dict[str, dict[str, Any]] = {node: {} for node in THEORY_NODES}
    for column, value in cell.items():
        node, _, key = str(column).partition(".")
        if node in nodes and key and not (isinstance(value, float) and np.isnan(value)):
            # a study mixing models reads an int column that other models lack as floats (8.0)
            nodes[node][key] = int(value) if isinstance(value, float) and value.is_integer() else value
    for node in GROUPS:
        if node in nodes and isinstance(cell.get(node), str):
            nodes[node]["name"] = cell[node]
    return OmegaConf.create(
        {node: OmegaConf.merge(OmegaConf.structured(schema), nodes[node]) for node, schema in THEORY_NODES.items()}
    )


def _recorded_inputs(path: str) -> theory.CellInputs | None:
    """The theory's inputs that the run recorded in the cell's ``meta.json`` (None for a cell made before they were)."""
    record = (read_meta(Path(path)) or {}).get(THEORY_INPUTS)
    return theory.CellInputs(**record) if record else None


def _cell_prediction(cell: Mapping[str, Any], last: pd.Series) -> theory.Profile | str:
    """The cell's predicted profile, or why there is none."""
    try:
        cfg = cell_config(cell)
    except (ValueError, TypeError) as err:
        return f"its config could not be read: {err}"
    reason = theory.not_applicable(cfg)
    if reason is not None:
        return reason
    at_last = last[last["layer"] == cfg.model.depth]["value"]
    last = at_last[at_last > 0]
    if last.empty and len(at_last) and (at_last == 0).all():
        # delta is exactly 0 at step 0 (Fixup's output layer starts at 0): the forward profile alone
        profile = _cell_prediction_anchored(cfg, cell, 1.0)
        return profile if isinstance(profile, str) else dataclasses.replace(profile, delta_std=None)
    if last.empty:
        return "no measured step-0 delta_std at the last hidden layer to anchor the gradient profile"
    return _cell_prediction_anchored(cfg, cell, float(np.exp(np.log(last).mean())))


def _cell_prediction_anchored(cfg: DictConfig, cell: Mapping[str, Any], delta_last: float) -> theory.Profile | str:
    """The cell's predicted profile with delta anchored at ``delta_last``, or why there is none."""
    try:
        inputs = _recorded_inputs(cell["path"])
    except (OSError, ValueError, TypeError) as err:
        return f"its meta.json could not be read: {err}"
    if inputs is None:
        return "made before runs recorded the theory's inputs (rerun it with force=true)"
    try:
        return theory.predicted_profile(cfg, inputs, delta_last)
    except ValueError as err:
        return str(err)


def predicted_layers(study: Study) -> Predictions:
    """The predicted step-0 rows of every complete cell of ``study``, from ``Study.cells`` and each
    cell's ``meta.json`` alone (no data is loaded), and the cells without a prediction, with why."""
    rows, skipped = [], []
    measured0 = study.layers[(study.layers["step"] == 0) & (study.layers["stat"] == "delta_std")]
    by_cell = dict(tuple(measured0.groupby(KEY)))
    for cell in study.cells[study.cells["status"] == CellStatus.COMPLETE].to_dict("records"):
        key = {"study": cell["study"], "cell": cell["cell"]}
        last = by_cell.get((cell["study"], cell["cell"]), measured0.iloc[:0])
        profile = _cell_prediction(cell, last)
        if isinstance(profile, str):
            skipped.append({**key, "reason": profile})
            continue
        for stat, field in PREDICTED_STATS.items():
            for layer, value in enumerate(
                getattr(profile, field) if getattr(profile, field) is not None else (), start=1
            ):
                rows.append({**key, "stat": stat, "layer": layer, "value": float(value)})
    return Predictions(
        layers=pd.DataFrame(rows, columns=[*KEY, "stat", "layer", "value"]),
        skipped=pd.DataFrame(skipped, columns=[*KEY, "reason"]),
    )


#: The spectrum statistics ``theory.jacobian_spectrum`` predicts: the mean squared singular value and
#: the normalized variance (variance / mean^2), the spread that free probability adds layer by layer.
PREDICTED_SPECTRUM = ("sv2_mean", "sv2_nvar")


def predicted_spectra(study: Study) -> Predictions:
    """The free-probability prediction of every complete cell that measured the Jacobian spectrum
    (``theory.jacobian_spectrum``, from the cell's config and ``meta.json`` alone), and the cells
    without one, with why."""
    rows, skipped = [], []
    measured = set(map(tuple, study.spectra[KEY].drop_duplicates().to_numpy())) if len(study.spectra) else set()
    for cell in study.cells[study.cells["status"] == CellStatus.COMPLETE].to_dict("records"):
        key = {"study": cell["study"], "cell": cell["cell"]}
        if (cell["study"], cell["cell"]) not in measured:
            continue
        try:
            cfg = cell_config(cell)
            reason = theory.spectrum_not_applicable(cfg)
            inputs = None if reason else _recorded_inputs(cell["path"])
        except (OSError, ValueError, TypeError) as err:
            reason = f"its config or meta.json could not be read: {err}"
        if reason is None and inputs is None:
            reason = "made before runs recorded the theory's inputs (rerun it with force=true)"
        if reason is not None:
            skipped.append({**key, "reason": reason})
            continue
        spectrum = theory.jacobian_spectrum(cfg, inputs)
        for stat, values in zip(PREDICTED_SPECTRUM, (spectrum.mean, spectrum.var / spectrum.mean**2), strict=True):
            rows.extend({**key, "stat": stat, "layer": k, "value": float(v)} for k, v in enumerate(values, start=1))
    return Predictions(
        layers=pd.DataFrame(rows, columns=[*KEY, "stat", "layer", "value"]),
        skipped=pd.DataFrame(skipped, columns=[*KEY, "reason"]),
    )


def trainable_depth(cells: pd.DataFrame, x: str, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The trainable depth 6 xi_c of Schoenholz et al. 2017 on a fine grid of sigma_w2 across ``xs``, for the cells' one activation and bias variance."""
    if x != "init.sigma_w2" or cells["act"].nunique() != 1 or "init.sigma_b2" not in cells:
        return None
    act, sigma_b2 = cells["act"].iloc[0], float(cells["init.sigma_b2"].iloc[0])
    alpha = cells["act.alpha"].iloc[0] if "act.alpha" in cells and pd.notna(cells["act.alpha"].iloc[0]) else None
    fine = np.linspace(xs.min(), xs.max(), 120)
    return fine, np.array([6 * theory.depth_scales(act, w, sigma_b2, alpha).xi_c for w in fine])
