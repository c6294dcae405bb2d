"""Per-layer profiles: each statistic at the start, at the end (the seeds that trained to it) and at
each diverged seed's last healthy step, and the first-to-last layer ratios of the gradient table."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd

from gradstudy.analysis.seeds import add_log_mean_ci, with_keys
from gradstudy.schema import KEY
from gradstudy.store.study import Study


class Phase(StrEnum):
    """When a profile is taken: at step 0; at the cell's last step, pooling the seeds that trained
    to it; at each diverged seed's last healthy step, which differs from seed to seed and is not pooled
    with the others."""

    START = "start"
    END = "end"
    EARLY = "early"


def phase_layers(study: Study) -> pd.DataFrame:
    """Layer rows of three phases, the one definition every table and figure uses:

    * ``start``: step 0, every seed;
    * ``end``: the last measured step of each seed that trained to the end (collapsed ones too), so
      that the seeds pooled in it are at comparable steps;
    * ``early``: each diverged seed's last healthy step (the state it was frozen in), kept apart so
      that a network that blew up at step 10 is never averaged with a trained one.

    ``ended_early`` is true on the ``early`` rows.
    """
    layers = study.layers
    start = layers[layers["step"] == 0].assign(phase=Phase.START.value)
    last = layers[layers["step"] == layers.groupby([*KEY, "seed"])["step"].transform("max")]
    diverged = study.seeds.loc[study.seeds["diverged_at"].notna(), [*KEY, "seed"]].assign(_diverged=True)
    last = last.merge(diverged, on=[*KEY, "seed"], how="left")
    early = last.pop("_diverged").fillna(False).astype(bool).to_numpy()
    last = last.assign(phase=np.where(early, Phase.EARLY.value, Phase.END.value))
    phased = pd.concat([start, last], ignore_index=True)
    phased["ended_early"] = phased["phase"] == Phase.EARLY
    return phased


def end_steps_text(phased: pd.DataFrame) -> str:
    """How the ``end`` and ``early`` rows of ``phase_layers`` are timed, for a caption: ``step 40``,
    and the range of the seeds that ended early."""
    end = phased[phased["phase"] != Phase.START]
    if end.empty:
        return "no seed has an end"
    trained = end.loc[~end["ended_early"], "step"]
    early = end.loc[end["ended_early"]].drop_duplicates([*KEY, "seed"])["step"]
    parts = [f"step {int(trained.max())}"] if len(trained) else []
    if len(early):
        span = f"{int(early.min())}" if early.min() == early.max() else f"{int(early.min())}–{int(early.max())}"
        parts.append(f"step {span} for the {len(early)} seed(s) that diverged (their last healthy step, drawn apart)")
    return "; ".join(parts)


#: Statistics that are positive magnitudes: summarized on the log scale.
MAGNITUDES = ("grad_norm", "delta_std")


def layer_ratio(first: pd.Series, last: pd.Series) -> pd.Series:
    """``first / last`` per seed, where a ratio over an exact zero reads 0: a layer whose gradient is
    exactly 0 has no spread left to compare (a dead or underflowed net), and 0 counts it in
    ``_n_zero`` where NaN would drop the seed silently. A ratio that is infinite stays inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = first / last
    return ratio.mask((first == 0) & (last == 0), 0.0)


def gradient_table(study: Study) -> pd.DataFrame:
    """One row per cell, phase (start, end, early: ``phase_layers``) and layer: geometric mean and
    log-scale CI of ``grad_norm`` and ``delta_std`` (with the count of exact zeros), mean saturated
    and dead fractions (where they apply), and the cell's first-to-last layer ratios (geometric mean
    and CI over seeds; below 1 the gradients shrink on their way down to the input; a ratio of two
    exact zeros is 0, counted in ``_n_zero``). ``step`` is the latest step of the phase's rows;
    ``n_ended_early`` counts the cell's seeds that diverged, whose last healthy step is the ``early``
    phase rather than ``end``.
    """
    phased = phase_layers(study)
    if phased.empty:
        return pd.DataFrame()
    wide = phased.pivot(index=[*KEY, "phase", "step", "seed", "ended_early", "layer"], columns="stat", values="value")
    wide = wide.reindex(columns=[*MAGNITUDES, "saturated_frac", "dead_frac"]).reset_index()
    early = wide[wide["ended_early"]].drop_duplicates([*KEY, "seed"]).groupby(KEY).size()
    rows = []
    for (study_name, cell, phase, layer), g in wide.groupby([*KEY, "phase", "layer"]):
        row = {
            "study": study_name,
            "cell": cell,
            "phase": phase,
            "step": int(g["step"].max()),
            "n_ended_early": int(early.get((study_name, cell), 0)),
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
            add_log_mean_ci(
                row, f"{stat}_ratio", layer_ratio(first.set_index("seed")[stat], last.set_index("seed")[stat])
            )
        ratios.append(row)
    table = table.merge(pd.DataFrame(ratios), on=[*KEY, "phase"])
    order = {phase.value: i for i, phase in enumerate(Phase)}
    table = table.sort_values(["phase", "layer"], key=lambda c: c.map(order) if c.name == "phase" else c)
    return with_keys(table, study)
