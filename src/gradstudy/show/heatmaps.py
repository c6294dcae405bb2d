"""Heat maps: the weight-gradient norm over layers and steps, and the trainability phase diagram."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from gradstudy import analysis
from gradstudy.analysis.predictions import trainable_depth
from gradstudy.schema import KEY, Outcome
from gradstudy.show.encoding import (
    WRAP,
    Encoding,
    Keys,
    encode,
    layout,
)
from gradstudy.show.plot import (
    COLLAPSED_TEXT,
    DIVERGED_MARK,
    SHARED_SCALE_DECADES,
    STEP_LABEL,
    Plot,
    integer_ticks,
    keyed,
    layer_label,
    levels,
    lost_mark,
    lost_seeds,
)
from gradstudy.store.study import Study


# ----- heat map -------------------------------------------------------------------------------------
def grad_norm_heatmap(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Layer x step map of ‖∂L/∂W‖ (geometric mean over seeds, log colour scale), one panel per cell.

    One colour scale is shared by every panel unless the panels' medians span more than
    ``SHARED_SCALE_DECADES`` decades; then each panel gets its own (the notes say which). Steps after
    a seed of the cell diverged are hatched, with ✕ at each divergence; values exactly 0 in every
    seed are grey. ``hue`` and ``style`` do not apply (colour is the value) and raise ``ValueError``.
    """
    data = study.layers[study.layers["stat"] == "grad_norm"].assign(measure="grad_norm")
    enc = encode(study, data, hue, style, col, row, wrap, lines=False)
    frame = keyed(study, data, enc)
    grids = {
        panel: g.assign(value=np.log(g["value"].where(g["value"] > 0)))
        .pivot_table(index="layer", columns="step", values="value", aggfunc="mean", dropna=False)
        .pipe(np.exp)
        for panel, g in frame.groupby(["_row", "_col"])
    }
    zeros = {
        panel: g.groupby(["layer", "step"])["value"].apply(lambda v: bool((v == 0).all())).sum()
        for panel, g in frame.groupby(["_row", "_col"])
    }
    medians = [float(np.nanmedian(np.log10(g.to_numpy()))) for g in grids.values() if np.isfinite(g.to_numpy()).any()]
    shared = not medians or max(medians) - min(medians) <= SHARED_SCALE_DECADES
    everything = np.concatenate([g.to_numpy().ravel() for g in grids.values()]) if grids else np.array([])
    everything = everything[np.isfinite(everything)]
    shared_norm = LogNorm(everything.min(), everything.max()) if shared and len(everything) else None
    plan = layout(levels(frame, "_row"), levels(frame, "_col"), ["grad_norm"], enc.wrap)
    lost = lost_seeds(study).merge(frame[[*KEY, "_row", "_col"]].drop_duplicates(), on=KEY)
    diverged = lost[lost["outcome"] == Outcome.DIVERGED]
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.75")
    pages = []
    for fig, panels in plan.figures("Weight-gradient norm by layer and step (geometric mean over seeds)", 1.3):
        mesh = None
        for panel, ax in panels.items():
            grid = grids.get((panel.row, panel.col))
            if grid is None:
                ax.set_axis_off()
                continue
            mine = lost[(lost["_row"] == panel.row) & (lost["_col"] == panel.col)]
            first = mine.loc[mine["outcome"] == Outcome.DIVERGED, "at"]
            # the last recorded column lasts until the latest divergence: no blank stretch before the hatching
            end = max(float(grid.columns.max()), float(first.max()) + 1 if len(first) else -np.inf)
            mesh = _heat_panel(fig, ax, grid, shared_norm, cmap, shared, end)
            _hatch_after_divergence(ax, first, end)
            for seed in mine[mine["outcome"] == Outcome.COLLAPSED].itertuples():
                ax.plot(
                    [seed.at], [0.03], transform=ax.get_xaxis_transform(), **lost_mark(Outcome.COLLAPSED, "crimson")
                )
            ax.set(xlabel=STEP_LABEL, ylabel=layer_label(study), title=panel.title)
            integer_ticks(ax, "y")
        if shared and mesh is not None:
            fig.colorbar(mesh, ax=list(panels.values()), label="‖∂L/∂W‖ (log scale)", shrink=0.8)
        _heatmap_legend(fig, set(lost["outcome"]), sum(zeros.values()) > 0)
        pages.append(fig)
    notes = [
        f"Colour: {'one log scale shared by every panel' if shared else 'one log scale per panel'}: the panels' medians span "
        f"{max(medians) - min(medians) if medians else 0:.1f} decades (shared up to {SHARED_SCALE_DECADES:g})."
    ]
    if len(diverged):
        notes.append(
            "Hatched: steps after the first seed of the cell diverged; later values average the remaining seeds. "
            "A cell's last recorded column is widened to its last divergence, so the map has no blank stretch."
        )
    if (lost["outcome"] == Outcome.COLLAPSED).any():
        notes.append(
            "⊘ on the step axis: where a seed collapsed (from then on no gradient and its loss at chance; grey where "
            "every seed of the cell is exactly 0)."
        )
    if sum(zeros.values()):
        notes.append(f"{int(sum(zeros.values()))} layer-step value(s) exactly 0 in every seed, shown grey.")
    return Plot(pages, enc, notes)


def _heat_panel(
    fig: plt.Figure, ax: plt.Axes, grid: pd.DataFrame, shared_norm: Any, cmap: Any, shared: bool, end: float
) -> Any:
    """The layer x step mesh of one panel, its last column reaching at least to step ``end``, with its
    own colour bar unless the scale is shared."""
    values = grid.to_numpy()
    finite = values[np.isfinite(values)]
    norm = shared_norm or (LogNorm(finite.min(), finite.max()) if len(finite) else None)
    steps = _edges(grid.columns)
    steps[-1] = max(steps[-1], end)
    mesh = ax.pcolormesh(steps, _edges(grid.index), np.ma.masked_invalid(values), norm=norm, cmap=cmap)
    if not shared:
        bar = fig.colorbar(mesh, ax=ax, label="‖∂L/∂W‖", pad=0.02)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    return mesh


def _hatch_after_divergence(ax: plt.Axes, first: pd.Series, last_step: float) -> None:
    """Hatching from the cell's first divergence on, and ✕ at each seed's."""
    if not len(first):
        return
    ax.axvspan(
        first.min(),
        max(last_step, first.min() + 1),
        facecolor="none",
        edgecolor="crimson",
        hatch="//",
        linewidth=0,
        zorder=3,
    )
    ax.plot(first, np.full(len(first), 0.03), transform=ax.get_xaxis_transform(), color="crimson", **DIVERGED_MARK)


def _heatmap_legend(fig: plt.Figure, outcomes: set[str], zeros: bool) -> None:
    handles: list[tuple[Any, str]] = []
    if Outcome.DIVERGED in outcomes:
        handles.append(
            (Patch(facecolor="none", edgecolor="crimson", hatch="//"), "after a seed of the cell diverged (✕)")
        )
    if Outcome.COLLAPSED in outcomes:
        handles.append((Line2D([], [], **lost_mark(Outcome.COLLAPSED, "crimson")), COLLAPSED_TEXT.replace("\n", " ")))
    if zeros:
        handles.append((Patch(facecolor="0.75"), "exactly 0 in every seed"))
    if handles:
        fig.legend(
            [h for h, _ in handles], [t for _, t in handles], loc="outside lower center", frameon=False, fontsize=8
        )


def _edges(centres: pd.Index) -> np.ndarray:
    """Cell edges around sorted ``centres`` (halfway between neighbours; ±0.5 around a single one)."""
    c = np.asarray(centres, np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def phase_diagram(study: Study, x: str = "init.sigma_w2", y: str = "model.depth", split: str = "train") -> Plot:
    """Heat map of the final ``split`` accuracy (mean over seeds) over two config keys, with mean-field
    theory's trainable depth 6 xi_c (Schoenholz et al. 2017) drawn over it when ``x`` is sigma_w2."""
    cells = study.cells.merge(analysis.final_accuracy(study, split), on=KEY)
    grid = cells.pivot_table(index=y, columns=x, values="accuracy", aggfunc="mean").sort_index().sort_index(axis=1)
    xs, ys = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.0 * len(xs) + 2.5, 0.55 * len(ys) + 2.0), layout="constrained")
    image = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(value):
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black"
            )
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
    ax.set(xlabel=x, ylabel=y, title=f"Final {split} accuracy (mean over seeds)")
    fig.colorbar(image, ax=ax, label=f"{split} accuracy")
    notes = [f"Each square: the mean over seeds of the {split} accuracy at each seed's last evaluation."]
    curve = trainable_depth(cells, x, xs)
    if curve is not None:
        fine, depth = curve
        ax.plot(_grid_position(fine, xs), _grid_position(depth, ys), color="white", linestyle="--", linewidth=1.5)
        ax.set_ylim(-0.5, len(ys) - 0.5)
        notes.append(
            "Dashed: 6 xi_c, the trainable depth mean-field theory predicts (gradstudy.theory), interpolated between the grid's rows."
        )
    return Plot([fig], Encoding(), notes)


def _grid_position(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Where ``values`` fall on a heat map axis whose squares sit at 0, 1, ... for the sorted ``grid``
    values: linear between squares, extended linearly past the ends (the axis limits clip it)."""
    index = np.arange(len(grid), dtype=float)
    if len(grid) < 2:
        return np.zeros_like(values, dtype=float)
    inside = np.interp(values, grid, index)
    below = (values - grid[0]) / (grid[1] - grid[0])
    above = len(grid) - 1 + (values - grid[-1]) / (grid[-1] - grid[-2])
    return np.where(values < grid[0], below, np.where(values > grid[-1], above, inside))
