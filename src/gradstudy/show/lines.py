"""Line figures: the panel machinery (``line_figure``) and the figures over training steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from gradstudy.schema import KEY
from gradstudy.show.encoding import (
    WRAP,
    Colours,
    Encoding,
    Keys,
    Panel,
    add_legend,
    colours_for,
    encode,
    layout,
    legend_inches,
    styles_for,
)
from gradstudy.show.plot import (
    DIVERGED_MARK,
    DIVERGED_TEXT,
    OVERLAY_LINE,
    OVERLAY_TEXT,
    SHARED_SCALE_DECADES,
    STEP_LABEL,
    ZERO_MARK,
    ZERO_TEXT,
    DivergenceMark,
    PanelRow,
    Plot,
    diverged_seeds,
    integer_ticks,
    keyed,
    levels,
    signed_log_axis,
    summarize,
)
from gradstudy.store.study import Study


# ----- the line figures -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LineOptions:
    """How ``line_figure`` draws: ``band`` the 95% band; ``divergence`` where ✕ goes (None: nowhere);
    integer x ticks; a signed-log x axis for histogram bins; ``drop_zero`` leaves out points whose
    summary is 0 (empty bins) instead of marking them at the axis floor."""

    band: bool = True
    divergence: DivergenceMark | None = DivergenceMark.LINE
    integer_x: bool = False
    signed_log_x: bool = False
    drop_zero: bool = False


@dataclass
class _Counts:
    """What a figure drew that its legend and notes must explain."""

    zero: int = 0
    marked: int = 0
    hidden: int = 0
    overlaid: int = 0


def line_figure(
    study: Study,
    data: pd.DataFrame,
    measures: Sequence[PanelRow],
    x: str,
    xlabel: str,
    title: str,
    enc: Encoding,
    overlay: pd.DataFrame | None = None,
    **options: Any,
) -> Plot:
    """Panels by ``enc.row`` x ``enc.col`` (wrapped), one line of panels per measure; in each panel
    one line per hue and style level against ``x``, the seeds summarized per ``PanelRow.summary``.

    ``options`` are ``LineOptions``' fields. ``overlay`` (study, cell, measure, ``x``, value: one
    value per cell, no seeds) is drawn dashed in each line's colour, averaged over the line's cells
    like the measure.
    """
    opts = LineOptions(**options)
    frame = keyed(study, data[data["measure"].isin([m.name for m in measures])], enc)
    drawn = keyed(study, overlay, enc) if overlay is not None and len(overlay) else None
    colours = colours_for(frame, enc.hue, "_hue") if enc.hue else None
    styles = styles_for(levels(frame, "_style")) if enc.style else {}
    diverged = _diverged_in_panels(study, frame, enc)
    if opts.divergence is DivergenceMark.LINE:  # a diverged seed's last evaluation is its ✕, not a point of the mean
        last = frame.merge(diverged[[*KEY, "seed", "diverged_at"]].drop_duplicates(), on=[*KEY, "seed"], how="left")[
            "diverged_at"
        ]
        frame = frame[~(last.to_numpy() == frame[x].to_numpy())]
    plan = layout(levels(frame, "_row"), levels(frame, "_col"), [m.name for m in measures], enc.wrap)
    unshared = [m.name for m in measures if not _comparable(frame[frame["measure"] == m.name])]
    pages, counts = [], _Counts()
    for fig, panels in plan.figures(title, legend_inches(colours, list(styles), [DIVERGED_TEXT, ZERO_TEXT])):
        shared: dict[str, plt.Axes] = {}
        for panel, ax in panels.items():
            measure = next(m for m in measures if m.name == panel.measure)
            if measure.name in shared and measure.name not in unshared:
                ax.sharey(shared[measure.name])
            shared.setdefault(measure.name, ax)
            in_panel = frame[(frame["_row"] == panel.row) & (frame["_col"] == panel.col)]
            rows = in_panel[in_panel["measure"] == measure.name]
            if rows.empty:
                ax.text(
                    0.5, 0.5, _why_empty(study, in_panel), ha="center", va="center", transform=ax.transAxes, fontsize=8
                )
            _draw_lines(ax, rows, measure, x, colours, styles, opts, counts)
            if drawn is not None:
                counts.overlaid += _draw_overlay(ax, drawn, panel, measure, x, colours, styles)
            if opts.divergence is not None:
                counts.marked += _mark_divergence(
                    ax, data[data["measure"] == measure.name], diverged, panel, x, colours, opts.divergence
                )
            _dress_axes(ax, panel, measure, rows, xlabel, opts)
        add_legend(fig, list(panels.values()), colours, styles, ", ".join(enc.style), _legend_extras(counts))
        pages.append(fig)
    return Plot(pages, enc, _line_notes(study, unshared, counts))


def _draw_lines(
    ax: plt.Axes,
    rows: pd.DataFrame,
    measure: PanelRow,
    x: str,
    colours: Colours | None,
    styles: dict,
    opts: LineOptions,
    counts: _Counts,
) -> None:
    """One line (and band) per hue and style level of the panel's rows; exact zeros as ▽ on a log axis."""
    summary = summarize(rows, ["_hue", "_style", x], measure.summary).sort_values(x)
    counts.hidden += _coinciding(summary, x)
    for (hue, style), line in summary.groupby(["_hue", "_style"], sort=False):
        colour = colours[hue] if colours is not None else "C0"
        linestyle, marker = styles.get(style, ("-", None))
        shown = line.assign(y=line["y"].where(line["y"] > 0)) if (measure.log or opts.drop_zero) else line
        single = shown["y"].notna().sum() == 1  # a lone point (a cell that diverged early) still shows
        ax.plot(
            shown[x],
            shown["y"],
            color=colour,
            linestyle=linestyle,
            marker=marker or ("o" if single else None),
            markersize=3,
            label=hue or "_all",
            gid=style,
        )
        if opts.band and shown["low"].notna().any():
            ax.fill_between(shown[x], shown["low"], shown["high"], color=colour, alpha=0.2, linewidth=0)
        zeros = line[line["y"] == 0]
        if len(zeros) and not opts.drop_zero and measure.log:
            counts.zero += len(zeros)
            ax.plot(zeros[x], np.full(len(zeros), 0.02), transform=ax.get_xaxis_transform(), color=colour, **ZERO_MARK)


def _dress_axes(
    ax: plt.Axes, panel: Panel, measure: PanelRow, rows: pd.DataFrame, xlabel: str, opts: LineOptions
) -> None:
    ax.set(xlabel=xlabel, ylabel=measure.ylabel, title=panel.title)
    ax.set_yscale("log" if measure.log else "linear")
    if opts.signed_log_x and len(rows):
        signed_log_axis(ax, rows)
    if opts.integer_x:
        integer_ticks(ax)


def _legend_extras(counts: _Counts) -> list[tuple[Line2D, str]]:
    """Legend entries for the marks the figure drew: ✕, ▽ and the dashed prediction."""
    extra = []
    if counts.marked:
        extra.append((Line2D([], [], markerfacecolor="0.6", **DIVERGED_MARK), DIVERGED_TEXT))
    if counts.zero:
        extra.append((Line2D([], [], color="0.3", **ZERO_MARK), ZERO_TEXT))
    if counts.overlaid:
        extra.append((Line2D([], [], color="0.3", **OVERLAY_LINE), OVERLAY_TEXT))
    return extra


def _line_notes(study: Study, unshared: list[str], counts: _Counts) -> list[str]:
    notes = []
    if unshared:
        notes.append(
            f"Y axes not shared for {', '.join(unshared)}: the panels' ranges differ by more than {SHARED_SCALE_DECADES:g} decades."
        )
    if counts.marked:
        notes.append(f"✕ marks where each of the {len(diverged_seeds(study))} diverged seed(s) diverged.")
    if counts.hidden:
        notes.append(
            f"{counts.hidden} line(s) coincide exactly with another line of their panel and are hidden under it "
            "(for example cells that share their initialization, at step 0)."
        )
    if counts.zero:
        notes.append(f"{counts.zero} value(s) exactly 0 drawn as ▽ at the axis floor.")
    return notes


def _draw_overlay(
    ax: plt.Axes,
    drawn: pd.DataFrame,
    panel: Panel,
    measure: PanelRow,
    x: str,
    colours: Colours | None,
    styles: dict[str, tuple[str, str | None]],
) -> int:
    """The panel's overlay lines: one per hue and style level, the mean (geometric on a log axis)
    over that line's cells. Returns how many were drawn."""
    mine = drawn[(drawn["_row"] == panel.row) & (drawn["_col"] == panel.col) & (drawn["measure"] == measure.name)]
    count = 0
    for (hue, _style), line in mine.groupby(["_hue", "_style"], sort=False):
        values = line.groupby(x)["value"]
        y = values.agg(lambda v: float(np.exp(np.log(v).mean()))) if measure.log else values.mean()
        colour = colours[hue] if colours is not None else "C0"
        ax.plot(y.index, y.to_numpy(), color=colour, label="_overlay", **OVERLAY_LINE)
        count += 1
    return count


def _why_empty(study: Study, panel_rows: pd.DataFrame) -> str:
    """Why a panel has nothing to draw for one measure: its cells' seeds all diverged before, or the
    statistic is not recorded for them (``dead_frac`` for tanh)."""
    cells = study.cells.merge(panel_rows[KEY].drop_duplicates(), on=KEY)
    if len(cells) and (cells["n_diverged"] == cells["n_seeds"]).all():
        return "every seed diverged before this"
    return "not recorded for this cell\n(does not apply)"


def _coinciding(summary: pd.DataFrame, x: str) -> int:
    """How many of a panel's lines repeat another line's points exactly (so only one of them shows)."""
    shapes = [
        tuple(zip(g[x], g["y"].round(12), strict=True)) for _, g in summary.groupby(["_hue", "_style"], sort=False)
    ]
    return len(shapes) - len(set(shapes))


def _diverged_in_panels(study: Study, frame: pd.DataFrame, enc: Encoding) -> pd.DataFrame:
    """Each diverged seed with the panels it appears in, and its colour label when the colour is a
    config key (a per-layer colour has no single colour for a seed)."""
    columns = [*KEY, "_col", "_row"] + (["_hue"] if set(enc.hue) <= set(study.cells.columns) else [])
    return diverged_seeds(study).merge(frame[columns].drop_duplicates(), on=KEY)


def _comparable(rows: pd.DataFrame) -> bool:
    """Whether panels of one measure can share an axis: their largest magnitudes lie within
    ``SHARED_SCALE_DECADES`` decades of each other."""
    peaks = rows["value"].abs().groupby([rows["_row"], rows["_col"]]).max()
    peaks = peaks[peaks > 0]
    return len(peaks) < 2 or float(np.log10(peaks.max() / peaks.min())) <= SHARED_SCALE_DECADES


def _mark_divergence(
    ax: plt.Axes,
    rows: pd.DataFrame,
    diverged: pd.DataFrame,
    panel: Panel,
    x: str,
    colours: Colours | None,
    where: DivergenceMark,
) -> int:
    """✕ at each diverged seed of the panel, at the step it diverged: at the height of its last
    recorded value (``line``) or on the x axis (``axis``)."""
    mine = diverged[(diverged["_row"] == panel.row) & (diverged["_col"] == panel.col)]
    count = 0
    for seed in mine.to_dict("records"):
        colour = colours[seed["_hue"]] if colours is not None and seed.get("_hue") in colours.colours else "0.6"
        if where is DivergenceMark.LINE:
            own = rows[
                (rows["study"] == seed["study"]) & (rows["cell"] == seed["cell"]) & (rows["seed"] == seed["seed"])
            ]
            if own.empty:
                continue
            ax.plot([seed["diverged_at"]], [own.loc[own[x].idxmax(), "value"]], color=colour, **DIVERGED_MARK)
        else:
            ax.plot([seed["diverged_at"]], [0.03], transform=ax.get_xaxis_transform(), color=colour, **DIVERGED_MARK)
        count += 1
    return count


def learning_curves(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Training loss (log) and test accuracy against step: mean over seeds with a 95% t band, ✕
    where a seed diverged (on its last evaluation, the frozen state at its last healthy step)."""
    data = study.curves.assign(measure=study.curves["split"] + " " + study.curves["metric"])
    measures = [
        PanelRow("train loss", "training loss (cross-entropy, nats)", log=True),
        PanelRow("test accuracy", "test accuracy (fraction)"),
    ]
    enc = encode(study, data, hue, style, col, row, wrap)
    return line_figure(study, data, measures, "step", STEP_LABEL, "Learning curves (mean over seeds, 95% t band)", enc)


def over_training(
    study: Study, stats: Sequence[tuple[str, str]], title: str, hue: Keys, style: Keys, col: Keys, row: Keys, wrap: int
) -> Plot:
    """Rows: ``stats``; by default one panel per cell with one line per layer (mean over seeds) against step."""
    data = study.layers[study.layers["stat"].isin([s for s, _ in stats])].rename(columns={"stat": "measure"})
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("layer",), own_hue="layer")
    return per_step_figure(study, data, [PanelRow(stat, label) for stat, label in stats], title, enc)


def per_step_figure(study: Study, data: pd.DataFrame, measures: Sequence[PanelRow], title: str, enc: Encoding) -> Plot:
    """Lines against step with no band (one line per layer, unit or percentile) and ✕ on the x axis."""
    return line_figure(
        study, data, measures, "step", STEP_LABEL, title, enc, band=False, divergence=DivergenceMark.AXIS
    )


def activation_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Mean and standard deviation of each layer's activations over training (Glorot & Bengio fig. 2 style)."""
    stats = [("act_mean", "activation mean"), ("act_std", "activation std")]
    return over_training(
        study, stats, "Activations per layer over training (mean over seeds)", hue, style, col, row, wrap
    )


def negative_frac_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Fraction of each layer's units with z <= 0 on every example of the batch, over training (a
    rectifier's units that pass no signal; dead for ReLU)."""
    stats = [("negative_frac", "units with z ≤ 0\non every example")]
    return over_training(
        study, stats, "Units at z ≤ 0 per layer over training (mean over seeds)", hue, style, col, row, wrap
    )


def unit_mean_median_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Median over units of each unit's batch-mean activation, per layer over training (Clevert et al. 2015's mean shift)."""
    stats = [("unit_mean_median", "median over units\nof the mean activation")]
    return over_training(
        study, stats, "Mean shift of the activations per layer (mean over seeds)", hue, style, col, row, wrap
    )


SATURATION_STATS = {"saturated_frac": "saturated fraction\n(of unit·examples)", "dead_frac": "dead fraction (of units)"}


def saturation_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Saturated and dead fractions per layer over training (only the statistics defined for each activation)."""
    present = [s for s in SATURATION_STATS if study.layers["stat"].eq(s).any()]
    stats = [(s, SATURATION_STATS[s]) for s in present]
    return over_training(
        study, stats, "Saturated and dead units per layer (mean over seeds)", hue, style, col, row, wrap
    )
