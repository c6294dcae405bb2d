"""Per-layer profiles: each statistic at the start and at each seed's last healthy step, and the
first-to-last layer ratios of the gradient table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradstudy.analysis.seeds import add_log_mean_ci, with_keys
from gradstudy.schema import KEY
from gradstudy.store.study import Study


def phase_layers(study: Study) -> pd.DataFrame:
    """Layer rows of two phases, the one definition every table and figure uses:

    * ``start``: step 0, every seed;
    * ``end``: each seed's last measured step: the end of training, or for a seed that diverged its
      last healthy step (the state it was frozen in). ``ended_early`` marks those seeds, so a
      reader can tell a trained network from one that blew up at step 10.
    """
    layers = study.layers
    start = layers[layers["step"] == 0].assign(phase="start")
    end = layers[layers["step"] == layers.groupby([*KEY, "seed"])["step"].transform("max")].assign(phase="end")
    phased = pd.concat([start, end], ignore_index=True)
    diverged = study.seeds.loc[study.seeds["diverged_at"].notna(), [*KEY, "seed"]].assign(_diverged=True)
    phased = phased.merge(diverged, on=[*KEY, "seed"], how="left")
    phased["ended_early"] = (phased["phase"] == "end") & phased.pop("_diverged").fillna(False).astype(bool)
    return phased


def end_steps_text(phased: pd.DataFrame) -> str:
    """How the ``end`` rows of ``phase_layers`` are timed, for a caption: ``step 40``, or the range
    of the seeds that ended early."""
    end = phased[phased["phase"] == "end"]
    if end.empty:
        return "no seed has an end"
    trained = end.loc[~end["ended_early"], "step"]
    early = end.loc[end["ended_early"]].drop_duplicates([*KEY, "seed"])["step"]
    parts = [f"step {int(trained.max())}"] if len(trained) else []
    if len(early):
        span = f"{int(early.min())}" if early.min() == early.max() else f"{int(early.min())}–{int(early.max())}"
        parts.append(f"step {span} for the {len(early)} seed(s) that diverged (their last healthy step)")
    return "; ".join(parts)


#: Statistics that are positive magnitudes: summarized on the log scale.
MAGNITUDES = ("grad_norm", "delta_std")


def gradient_table(study: Study) -> pd.DataFrame:
    """One row per cell, phase (start/end, ``phase_layers``) and layer: geometric mean and log-scale
    CI of ``grad_norm`` and ``delta_std`` (with the count of exact zeros), mean saturated and dead
    fractions (where they apply), and the cell's first-to-last layer ratios (geometric mean and CI
    over seeds; below 1 the gradients shrink on their way down to the input). ``step`` is the latest
    step of the phase's rows; ``n_ended_early`` counts the seeds whose ``end`` is their last healthy
    step before divergence.
    """
    phased = phase_layers(study)
    if phased.empty:
        return pd.DataFrame()
    wide = phased.pivot(index=[*KEY, "phase", "step", "seed", "ended_early", "layer"], columns="stat", values="value")
    wide = wide.reindex(columns=[*MAGNITUDES, "saturated_frac", "dead_frac"]).reset_index()
    rows = []
    for (study_name, cell, phase, layer), g in wide.groupby([*KEY, "phase", "layer"]):
        row = {
            "study": study_name,
            "cell": cell,
            "phase": phase,
            "step": int(g["step"].max()),
            "n_ended_early": int(g["ended_early"].sum()),
            "layer": int(layer),
        }
        for stat in MAGNITUDES:
            add_log_mean_ci(row, stat, g[stat])
        for stat in ("saturated_frac", "dead_frac"):
            row[stat] = float(g[stat].mean()) if g[stat].notna().any() else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    ratios = []
    for (study_name, cell, phase), g in wide.groupby([*KEY, "phase"]):
        first, last = g[g["layer"] == g["layer"].min()], g[g["layer"] == g["layer"].max()]
        row = {"study": study_name, "cell": cell, "phase": phase}
        for stat in MAGNITUDES:
            with np.errstate(divide="ignore", invalid="ignore"):
                per_seed = first.set_index("seed")[stat] / last.set_index("seed")[stat]
            add_log_mean_ci(row, f"{stat}_ratio", per_seed)
        ratios.append(row)
    return with_keys(table.merge(pd.DataFrame(ratios), on=[*KEY, "phase"]), study)
