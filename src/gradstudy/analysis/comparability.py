"""Warnings about what a grid's comparisons mean: rules over a whole study (``cells.compat`` holds
the rules over one cell). Each rule reads the stored study and returns its warning, with its
numbers, or None; adding a rule is one function plus one entry in ``GRID_RULES``."""

from __future__ import annotations

from collections.abc import Callable

from gradstudy.schema import KEY
from gradstudy.store.study import Study


def lr_and_schedule_vary(study: Study) -> str | None:
    """``optim.lr`` is a schedule's peak; schedules spend different fractions of it over a run, so at
    one ``optim.lr`` two schedules differ in step size as well as in shape."""
    if not {"optim.lr", "optim.schedule"} <= set(study.varying_keys) or study.steps.empty:
        return None
    steps = study.steps.drop_duplicates([*KEY, "step"]).groupby(KEY)
    rates = steps["lr"].agg(["mean", "size"]).reset_index().rename(columns={"mean": "mean_lr"})
    cells = study.cells.merge(rates, on=KEY)
    cells = cells[cells["size"] == cells["train.steps"]]  # a seed trained to the end: the whole schedule is there
    if cells.empty:
        return None
    fraction = (cells["mean_lr"] / cells["optim.lr"]).groupby(cells["optim.schedule"]).mean()
    shares = ", ".join(f"{schedule} {share:.2f}" for schedule, share in fraction.sort_values(ascending=False).items())
    return (
        "optim.lr and optim.schedule both vary: optim.lr is each schedule's peak, and the schedules spend different "
        f"fractions of it over a run (mean rate / optim.lr: {shares}), so at one optim.lr they differ in step size as "
        "well as in shape; compare each schedule at its own best optim.lr"
    )


GRID_RULES: list[Callable[[Study], str | None]] = [lr_and_schedule_vary]


def grid_warnings(study: Study) -> list[str]:
    """One line per rule of ``GRID_RULES`` that the study's grid breaks."""
    return [w for rule in GRID_RULES if (w := rule(study)) is not None]
