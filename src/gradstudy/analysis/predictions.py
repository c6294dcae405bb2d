"""Mean-field predictions for the cells of a study, as tidy rows beside the measured ones.

For each complete cell the theory applies to (``theory.not_applicable``), ``predicted_layers`` gives
the step-0 profile of ``theory.predicted_profile`` for the cell's own config and data: the std of z_l
(``z_std``), of
h_l (``act_std``) and of delta_l (``delta_std``), the latter anchored at the measured step-0
``delta_std`` of the last hidden layer (geometric mean over seeds). Cells it does not apply to are
listed with the reason, so that a report can say so instead of drawing nothing silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from gradstudy import theory
from gradstudy.cells.compat import data_inputs
from gradstudy.cells.config import ActConfig, DataConfig, InitConfig, ModelConfig, NormConfig
from gradstudy.inputs.data import load_dataset
from gradstudy.schema import CONFIG, KEY, CellStatus
from gradstudy.store.study import Study

#: The measured statistic each predicted profile is drawn against.
PREDICTED_STATS = {"act_std": "h_std", "delta_std": "delta_std", "z_std": "z_std"}


@dataclass(frozen=True)
class Predictions:
    """``layers``: study, cell, stat, layer, value (step 0); ``skipped``: study, cell, reason."""

    layers: pd.DataFrame
    skipped: pd.DataFrame

    def ratios(self) -> pd.DataFrame:
        """The predicted first-to-last hidden layer ratio of ``delta_std`` per cell."""
        delta = self.layers[self.layers["stat"] == "delta_std"]
        if delta.empty:
            return pd.DataFrame(columns=[*KEY, "delta_std_ratio_predicted"])
        ends = delta.sort_values("layer").groupby(KEY)["value"].agg(["first", "last"])
        return (ends["first"] / ends["last"]).rename("delta_std_ratio_predicted").reset_index()


#: The config nodes the theory reads, with their schemas (a cell's config.yaml leaves out the keys
#: its options ignore; the schema's defaults fill them back in).
THEORY_NODES = {"init": InitConfig, "act": ActConfig, "norm": NormConfig, "data": DataConfig, "model": ModelConfig}


def cell_config(path: Path) -> DictConfig:
    """The nodes of a cell's config (its ``config.yaml``) that the theory reads, on the schema's defaults."""
    plain = yaml.safe_load((Path(path) / CONFIG).read_text()) or {}
    return OmegaConf.create(
        {
            node: OmegaConf.merge(OmegaConf.structured(schema), plain.get(node, {}))
            for node, schema in THEORY_NODES.items()
        }
    )


def predicted_layers(study: Study) -> Predictions:
    rows, skipped = [], []
    measured0 = study.layers[(study.layers["step"] == 0) & (study.layers["stat"] == "delta_std")]
    cells = study.cells[study.cells["status"] == CellStatus.COMPLETE]
    for cell in cells.to_dict("records"):
        key = {"study": cell["study"], "cell": cell["cell"]}
        try:
            cfg = cell_config(cell["path"])
        except (OSError, ValueError, yaml.YAMLError) as err:
            skipped.append({**key, "reason": f"its config could not be read: {err}"})
            continue
        reason = theory.not_applicable(cfg)
        last = measured0[
            (measured0["study"] == cell["study"])
            & (measured0["cell"] == cell["cell"])
            & (measured0["layer"] == cfg.model.depth)
        ]["value"]
        last = last[last > 0]
        if reason is None and last.empty:
            reason = "no measured step-0 delta_std at the last hidden layer to anchor the gradient profile"
        if reason is None:
            inputs = data_inputs(load_dataset(cfg.data))
            try:
                profile = theory.predicted_profile(
                    cfg, inputs.data_q, inputs.n_inputs, float(np.exp(np.log(last).mean()))
                )
            except ValueError as err:
                reason = str(err)
        if reason is not None:
            skipped.append({**key, "reason": reason})
            continue
        for stat, field in PREDICTED_STATS.items():
            for layer, value in enumerate(getattr(profile, field), start=1):
                rows.append({**key, "stat": stat, "layer": layer, "value": float(value)})
    return Predictions(
        layers=pd.DataFrame(rows, columns=[*KEY, "stat", "layer", "value"]),
        skipped=pd.DataFrame(skipped, columns=[*KEY, "reason"]),
    )
