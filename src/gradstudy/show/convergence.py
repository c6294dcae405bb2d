"""Convergence figures: steps to a target per seed with the cells' medians, and inference latency."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from gradstudy import analysis
from gradstudy.analysis.convergence import steps_to_target
from gradstudy.schema import KEY, Outcome
from gradstudy.show.encoding import (
    WRAP,
    Colours,
    Encoding,
    Keys,
    add_legend,
    colours_for,
    encode,
    layout,
    legend_inches,
    styles_for,
)
from gradstudy.show.plot import (
    STEP_LABEL,
    Plot,
    keyed,
    levels,
    lost_mark,
)
from gradstudy.show.present import value_text
from gradstudy.store.study import Study


# ----- steps to target -------------------------------------------------------------------------------
def steps_to_target_figure(
    study: Study,
    target: float,
    metric: str = "accuracy",
    split: str = "test",
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
) -> Plot:
    """Per facet, two panels. Top: each seed's steps to target (● reached, ▷ healthy but never
    reached, drawn at its last step, ✕ diverged before reaching it, at the step it diverged) with
    the cell's lower median and bootstrap 95% CI (◆). Bottom: the fraction of seeds not yet at the
    target against step (a diverged seed never gets there)."""
    convergence = analysis.convergence_table(study, target, metric, split)
    times = steps_to_target(analysis.curves_of(study, split), target, metric, split)
    times = times.merge(
        study.seeds[[*KEY, "seed", "outcome", "diverged_at", "collapsed_at"]], on=[*KEY, "seed"], how="left"
    )
    data = times.assign(measure="times", value=times["step"])
    enc = encode(study, data, hue, style, col, row, wrap)
    frame = keyed(study, data, enc)
    colours = colours_for(frame, enc.hue, "_hue") if enc.hue else None
    styles = styles_for(levels(frame, "_style")) if enc.style else {}
    final = float(study.curves["step"].max()) if len(study.curves) else 1.0
    relation = "≥" if metric == "accuracy" else "≤"
    plan = layout(levels(frame, "_row"), levels(frame, "_col"), ["times", "survival"], enc.wrap)
    # the handles draw the glyphs, so the texts do not repeat them
    marks = [
        (Line2D([], [], marker="o", color="0.4", linestyle="none"), "seed reached the target"),
        (Line2D([], [], marker=">", color="0.4", markerfacecolor="none", linestyle="none"), "healthy, never reached"),
        (Line2D([], [], **lost_mark(Outcome.DIVERGED, "0.6")), "diverged before reaching it"),
        *(
            [(Line2D([], [], **lost_mark(Outcome.COLLAPSED, "0.4")), "collapsed before reaching it")]
            if (times["outcome"] == Outcome.COLLAPSED).any()
            else []
        ),
        (Line2D([], [], marker="D", color="black", linestyle="none"), "lower median, bootstrap 95% CI"),
    ]
    pages = []
    steps = np.sort(analysis.curves_of(study, split)["step"].unique())
    xlabel = f"steps to {split} {metric} {relation} {target}"
    for fig, panels in plan.figures(
        f"Convergence speed: steps to {split} {metric} {relation} {target}",
        legend_inches(colours, list(styles), [t for _, t in marks]),
    ):
        for panel, ax in panels.items():
            rows = frame[(frame["_row"] == panel.row) & (frame["_col"] == panel.col)]
            if panel.measure == "times":
                _times_panel(ax, rows, convergence, colours, final, [*enc.hue, *enc.style])
                ax.set(title=panel.title, xlabel=xlabel, ylabel=" | ".join([*enc.hue, *enc.style]) or "cell")
            else:
                _survival_panel(ax, rows, steps, colours, styles)
                ax.set(title=panel.title)
        add_legend(fig, list(panels.values()), colours, styles, ", ".join(enc.style), marks)
        pages.append(fig)
    notes = ["Median: the lower median over the healthy seeds, finite when at least half reach the target."]
    for outcome, glyph in ((Outcome.DIVERGED, "✕"), (Outcome.COLLAPSED, "⊘")):
        n = int((times["outcome"] == outcome).sum())
        if n:
            notes.append(
                f"{glyph}: {n} seed(s) {outcome.value}; they count as never reaching the target after it, and are left "
                "out of the median."
            )
    return Plot(pages, enc, notes)


def _times_panel(
    ax: plt.Axes,
    rows: pd.DataFrame,
    convergence: pd.DataFrame,
    colours: Colours | None,
    final: float,
    keys: list[str],
) -> None:
    """One row per cell: each seed's steps to target, and the cell's lower median with its CI (◆).
    A row is named by its values of ``keys`` alone, in the y label's order (``0.1 | he``), so that
    names of several keys stay short."""
    cells = rows.drop_duplicates(KEY).to_dict("records")
    for y, cell in enumerate(cells):
        own = rows[(rows["study"] == cell["study"]) & (rows["cell"] == cell["cell"])]
        _seed_marks(ax, own, y, colours[cell["_hue"]] if colours is not None else "C0")
        conv = convergence[(convergence["study"] == cell["study"]) & (convergence["cell"] == cell["cell"])]
        if len(conv) and np.isfinite(conv["steps_to_target"].iloc[0]):
            c = conv.iloc[0]
            low = c["steps_low"] if np.isfinite(c["steps_low"]) else c["steps_to_target"]
            high = c["steps_high"] if np.isfinite(c["steps_high"]) else final
            ax.errorbar(
                c["steps_to_target"],
                y + 0.25,
                xerr=[[c["steps_to_target"] - low], [high - c["steps_to_target"]]],
                fmt="D",
                color="black",
                markersize=4,
                capsize=3,
            )
    names = [" | ".join(value_text(c[k]) for k in keys) or c["cell"] for c in cells]
    ax.set_yticks(range(len(cells)), names, fontsize=7)
    ax.set(xlim=(-0.02 * final, final * 1.05), ylim=(len(cells) - 0.4, -0.6))


def _survival_panel(ax: plt.Axes, rows: pd.DataFrame, steps: np.ndarray, colours: Colours | None, styles: dict) -> None:
    """The fraction of each cell's seeds not yet at the target, against step."""
    for cell in rows.drop_duplicates(KEY).to_dict("records"):
        own = rows[(rows["study"] == cell["study"]) & (rows["cell"] == cell["cell"])]
        remaining = [(own["step"] > s).mean() for s in steps]
        linestyle, _ = styles.get(cell["_style"], ("-", None))
        ax.step(
            steps,
            remaining,
            where="post",
            color=colours[cell["_hue"]] if colours is not None else "C0",
            linestyle=linestyle,
            label=cell["_hue"] or "_all",
            gid=cell["_style"],
        )
    ax.set(xlabel=STEP_LABEL, ylabel="fraction of seeds\nnot yet at target", ylim=(-0.02, 1.02))


def _seed_marks(ax: plt.Axes, seeds: pd.DataFrame, y: float, colour: tuple) -> None:
    """One mark per seed on the line ``y``, jittered slightly so that equal times stay visible."""
    jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    for dy, seed in zip(jitter, seeds.itertuples(), strict=True):
        if np.isfinite(seed.step):
            ax.plot(seed.step, y + dy, marker="o", color=colour, linestyle="none", markersize=4)
        elif seed.outcome != Outcome.OK:
            at = seed.diverged_at if seed.outcome == Outcome.DIVERGED else seed.collapsed_at
            ax.plot(at, y + dy, **{**lost_mark(seed.outcome, colour), "markersize": 6})
        else:
            ax.plot(
                seed.last_step, y + dy, marker=">", color=colour, markerfacecolor="none", linestyle="none", markersize=5
            )


def latency_rounds(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Inference microseconds per example of each arm ``gradstudy.reproduce`` timed, one line per
    arm against the interleaved round (``gradstudy.engine.latency``); the ratios, not the levels, are the result."""
    from gradstudy.analysis.latency import study_latency

    table = study_latency(study)
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    if table is None:
        ax.text(
            0.5,
            0.5,
            "no latency.csv: python -m gradstudy.reproduce times inference after training",
            ha="center",
            transform=ax.transAxes,
        )
        return Plot([fig], Encoding(), [])
    medians = table.groupby("arm")["seconds_per_example"].median()
    for arm, rows in table.groupby("arm", sort=False):
        ax.plot(
            rows["round"],
            rows["seconds_per_example"] * 1e6,
            marker="o",
            markersize=3,
            label=f"{arm} (median {medians[arm] * 1e6:.3g} µs)",
        )
    ax.set(
        xlabel="round (every arm timed in turn)",
        ylabel="µs per example",
        title="Inference time per example",
        ylim=(0, None),
    )
    ax.legend(fontsize=8)
    fastest = medians.idxmin()
    notes = [
        "Ratios to the fastest arm's median: "
        + ", ".join(f"{arm} {medians[arm] / medians[fastest]:.3f}" for arm in medians.index)
        + "."
    ]
    return Plot([fig], Encoding(), notes)
