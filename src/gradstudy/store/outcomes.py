"""What became of each seed and each cell: ``ok``, ``diverged`` or ``collapsed``.

A seed *diverged* when its loss, parameters or optimizer state turned non-finite (the engine
records the step). A seed *collapsed* when it trained to the end but stopped learning for good: a
dead or underflowed network whose output no longer depends on its input. Its test:

* over its last ``COLLAPSE_WINDOW`` recorded statistics steps, the weight-gradient norm of every
  hidden layer is exactly 0 or below float32's smallest normal number (``FLOAT32_TINY``), and
* its mean minibatch loss over the steps from the first of those on is within
  ``COLLAPSE_TOLERANCE`` · ln(C) of ln(C), the loss of a uniform guess among the C classes.

``collapsed_at`` is the first recorded step of the run of such steps that lasts to the end. A cell
is ``ok`` when at least one seed is; otherwise ``collapsed`` when at least one seed collapsed, else
``diverged``. A cell recorded without layer statistics (``stats=none``) cannot collapse. The test
reads only the stored tables, so studies written before it existed are classified the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradstudy.schema import N_CLASSES, Outcome

#: How many of a seed's last recorded statistics steps must show no gradient.
COLLAPSE_WINDOW = 5
#: How close to ln(C) the mean minibatch loss must stay, as a fraction of ln(C).
COLLAPSE_TOLERANCE = 0.02
#: Gradient norms below this are float32 underflow: the smallest normal float32.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def collapsed_seeds(layers: pd.DataFrame, steps: pd.DataFrame, n_classes: int) -> dict[int, int]:
    """Seed -> ``collapsed_at`` for the collapsed seeds of one cell, from its ``layers`` (seed, step,
    layer, stat, value) and ``steps`` (seed, step, loss) tables. Pass only the seeds that did not diverge."""
    norms = layers[layers["stat"] == "grad_norm"]
    if norms.empty or n_classes < 2:
        return {}
    chance = math.log(n_classes)
    silent = (norms["value"] < FLOAT32_TINY).groupby([norms["seed"], norms["step"]]).all()
    out = {}
    for seed, by_step in silent.groupby(level="seed"):
        flags = by_step.droplevel("seed").sort_index()
        if len(flags) < COLLAPSE_WINDOW or not flags.iloc[-COLLAPSE_WINDOW:].all():
            continue
        loud = flags.index[~flags.to_numpy()]
        since = int(flags.index[flags.index > loud.max()].min()) if len(loud) else int(flags.index.min())
        window_start = flags.index[-COLLAPSE_WINDOW]
        losses = steps.loc[(steps["seed"] == seed) & (steps["step"] >= window_start), "loss"]
        if len(losses) and abs(float(losses.mean()) - chance) <= COLLAPSE_TOLERANCE * chance:
            out[int(seed)] = since
    return out


def cell_outcome(seeds: list[int], diverged: Mapping[int, int], collapsed: Mapping[int, int]) -> Outcome:
    """``ok`` when a seed trained to the end and kept learning; else ``collapsed`` when one collapsed, else ``diverged``."""
    if any(s not in diverged and s not in collapsed for s in seeds):
        return Outcome.OK
    return Outcome.COLLAPSED if collapsed else Outcome.DIVERGED


def classify(
    seeds: list[int], diverged: Mapping[int, int], layers: pd.DataFrame, steps: pd.DataFrame, data: str
) -> tuple[dict[int, int], Outcome]:
    """The collapsed seeds (seed -> ``collapsed_at``) of a cell trained on dataset ``data``, from its
    ``layers`` and ``steps`` tables (the diverged seeds left out), and the cell's outcome."""
    collapsed = collapsed_seeds(layers[~layers["seed"].isin(list(diverged))], steps, N_CLASSES.get(data, 0))
    return collapsed, cell_outcome(seeds, diverged, collapsed)


def outcome_text() -> str:
    """The definitions, for a caption or a report."""
    return (
        "A seed has *collapsed* when, over its last "
        f"{COLLAPSE_WINDOW} recorded statistics steps, every hidden layer's weight gradient is exactly 0 or below "
        f"float32's range and its mean minibatch loss stays within {COLLAPSE_TOLERANCE:.0%} of ln(classes), a "
        "uniform guess: it trained to the end but no longer learns."
    )
