"""Line figures: the panel machinery (``line_figure``) and the figures over training steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from gradstudy.cells.statistics import Summary
from gradstudy.schema import KEY, Outcome
from gradstudy.show.encoding import (
    WRAP,
    Colours,
    Encoding,
    Keys,
    Panel,
    add_legend,
    colours_for,
    encode,
    fit_legend,
    layout,
    legend_inches,
    styles_for,
)
from gradstudy.show.plot import (
    OVERLAY_LINE,
    OVERLAY_TEXT,
    SHARED_SCALE_DECADES,
    STEP_LABEL,
    ZERO_MARK,
    ZERO_TEXT,
    DivergenceMark,
    PanelRow,
    Plot,
    integer_ticks,
    keyed,
    levels,
    lost_handles,
    lost_mark,
    lost_seeds,
    signed_log_axis,
    summarize,
)
from gradstudy.store.study import Study

# ----- the line figures -----------------------------------------------------------------------------
#: A line needs this many seeds for a band; with fewer its seeds are drawn instead.
MIN_BAND_SEEDS = 3
#: A summarized value further than this many decades outside its panel's healthy range is clipped.
CLIP_DECADES = 3.0
#: Where a clipped value is drawn: at the top or bottom edge of the panel, as an arrow.
CLIPPED_MARK = dict(markersize=9, linestyle="none", zorder=6)
CLIPPED_TEXT = "off the axis (count in the notes)"
#: The learning rate of a line's schedule, drawn faintly under it on a right-hand axis.
RATE_LINE = dict(linewidth=1.0, alpha=0.35, linestyle="-", zorder=0)
RATE_TEXT = "learning rate / its peak\n(faint, right axis)"
RATE_AXIS = "learning rate / peak"
#: A seed drawn apart from the pooled lines (a diverged seed's profile at its last healthy step).
APART_LINE = dict(linestyle=":", linewidth=1.0, alpha=0.8, zorder=2)
APART_TEXT = "one diverged seed at its\nlast healthy step (not pooled)"
#: A seed drawn itself when its line has too few seeds for a band.
SEED_LINE = dict(linewidth=0.7, alpha=0.45, zorder=1)
SEED_TEXT = f"one seed (lines of < {MIN_BAND_SEEDS} seeds\nget no band)"
#: The column of ``line_figure``'s data that marks rows drawn per seed, apart from the pooled lines.
APART = "_apart"


@dataclass(frozen=True)
class LineOptions:
    """How ``line_figure`` draws: ``band`` the 95% band; ``divergence`` where ✕ and ⊘ go (None:
    nowhere); integer x ticks; a signed-log x axis for histogram bins; ``drop_zero`` leaves out
    points whose summary is 0 (empty bins) instead of marking them at the axis floor; ``clip``
    keeps values far outside the healthy seeds' range from setting the axis."""

    band: bool = True
    divergence: DivergenceMark | None = DivergenceMark.LINE
    integer_x: bool = False
    signed_log_x: bool = False
    #: A log x axis (positive values only: the Jacobian spectrum's log bins).
    log_x: bool = False
    drop_zero: bool = False
    clip: bool = True
    #: What the dashed ``overlay`` lines are, in the legend.
    overlay_text: str = OVERLAY_TEXT


@dataclass
class _Counts:
    """What a figure drew that its legend and notes must explain."""

    zero: int = 0
    marked: dict[str, int] = field(default_factory=dict)
    hidden: int = 0
    overlaid: int = 0
    clipped: int = 0
    #: The seeds (study, cell, seed) drawn apart, and those drawn thin for want of a band.
    apart: set = field(default_factory=set)
    seed_lines: set = field(default_factory=set)
    rated: int = 0


def line_figure(
    study: Study,
    data: pd.DataFrame,
    measures: Sequence[PanelRow],
    x: str,
    xlabel: str,
    title: str,
    enc: Encoding,
    overlay: pd.DataFrame | None = None,
    rates: pd.DataFrame | None = None,
    **options: Any,
) -> Plot:
    """Panels by ``enc.row`` x ``enc.col`` (wrapped), one line of panels per measure; in each panel
    one line per hue and style level against ``x``, the seeds summarized per ``PanelRow.summary``.

    ``options`` are ``LineOptions``' fields. ``overlay`` (study, cell, measure, ``x``, value: one
    value per cell, no seeds) is drawn dashed in each line's colour, averaged over the line's cells
    like the measure. Rows of ``data`` whose ``APART`` column is true are drawn one thin dotted line
    per seed instead of being pooled, and never set the axis: a value outside the pooled lines'
    range is drawn at the panel's edge and counted. A line with fewer than ``MIN_BAND_SEEDS`` seeds
    gets no band; its seeds are drawn thin. With ``clip``, the axis is set by the seeds that did
    not diverge, and a value more than ``CLIP_DECADES`` decades outside their range is drawn at the
    panel's edge and counted. ``rates`` (study, cell, ``x``, lr as a fraction of its peak) is drawn
    faintly under the lines on a right-hand axis from 0 to 1, one line per hue and style level (the
    mean over its cells).
    """
    opts = LineOptions(**options)
    data = data if APART in data else data.assign(**{APART: False})
    frame = keyed(study, data[data["measure"].isin([m.name for m in measures])], enc)
    frame = frame.merge(study.seeds[[*KEY, "seed", "outcome"]], on=[*KEY, "seed"], how="left")
    drawn = keyed(study, overlay, enc) if overlay is not None and len(overlay) else None
    rated = keyed(study, rates, enc) if rates is not None and len(rates) else None
    colours = colours_for(frame, enc.hue, "_hue") if enc.hue else None
    styles = styles_for(levels(frame, "_style")) if enc.style else {}
    lost = _lost_in_panels(study, frame if opts.divergence is not None else frame[:0], enc)
    if opts.divergence is DivergenceMark.LINE:  # a diverged seed's last evaluation is its ✕, not a point of the mean
        diverged = lost.loc[lost["outcome"] == Outcome.DIVERGED, [*KEY, "seed", "at"]].drop_duplicates()
        last = frame.merge(diverged, on=[*KEY, "seed"], how="left")["at"]
        frame = frame[~(last.to_numpy() == frame[x].to_numpy())]
    plan = layout(levels(frame, "_row"), levels(frame, "_col"), [m.name for m in measures], enc.wrap)
    unshared = [m.name for m in measures if not _comparable(frame[(frame["measure"] == m.name) & ~frame[APART]])]
    extras = _expected_extras(frame, measures, x, lost, drawn, opts)
    if rated is not None:
        extras["rated"] = (Line2D([], [], color="0.3", **RATE_LINE), RATE_TEXT)
    pages, counts = [], _Counts()
    for fig, panels in plan.figures(title, legend_inches(colours, list(styles), [t for _, t in extras.values()])):
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
            pooled, apart = rows[~rows[APART]], rows[rows[APART]]
            summary = summarize(pooled, ["_hue", "_style", x], measure.summary).sort_values(x)
            allowed = _allowed_range(pooled, summary, measure, opts)
            _draw_lines(ax, summary, pooled, measure, x, colours, styles, opts, counts, allowed)
            _draw_apart(ax, apart, summary, measure, x, colours, styles, counts)
            if drawn is not None:
                counts.overlaid += _draw_overlay(ax, drawn, panel, measure, x, colours, styles)
            if rated is not None:
                counts.rated += _draw_rates(ax, rated, panel, x, colours)
            if opts.divergence is not None:
                _mark_lost(ax, data[data["measure"] == measure.name], lost, panel, x, colours, opts.divergence, counts)
            _dress_axes(ax, panel, measure, rows, xlabel, opts)
        shown = _drawn_extras(extras, counts)
        add_legend(fig, list(panels.values()), colours, styles, ", ".join(enc.style), shown)
        fit_legend(fig, legend_inches(colours, list(styles), [t for _, t in shown]))
        pages.append(fig)
    return Plot(pages, enc, _line_notes(study, lost, unshared, counts))


def _expected_extras(
    frame: pd.DataFrame,
    measures: Sequence[PanelRow],
    x: str,
    lost: pd.DataFrame,
    drawn: pd.DataFrame | None,
    opts: LineOptions,
) -> dict[str, tuple[Line2D, str]]:
    """Legend entries, by kind, for the marks the figure may draw, known before drawing so that the
    figure leaves room for them (``_drawn_extras`` keeps those that were drawn)."""
    extra = dict(zip(sorted(set(lost["outcome"])), lost_handles(set(lost["outcome"])), strict=True))
    log_measures = [m.name for m in measures if m.log]
    if not opts.drop_zero and (frame["measure"].isin(log_measures) & (frame["value"] == 0)).any():
        extra["zero"] = (Line2D([], [], color="0.3", **ZERO_MARK), ZERO_TEXT)
    if drawn is not None:
        extra["overlaid"] = (Line2D([], [], color="0.3", **OVERLAY_LINE), opts.overlay_text)
    if frame[APART].any():
        extra["apart"] = (Line2D([], [], color="0.3", **APART_LINE), APART_TEXT)
    pooled = frame[~frame[APART]]
    if opts.band and (pooled.groupby([*KEY, "measure", x])["seed"].nunique() < MIN_BAND_SEEDS).any():
        extra["seed_lines"] = (Line2D([], [], color="0.3", **SEED_LINE), SEED_TEXT)
    if opts.clip:
        extra["clipped"] = (Line2D([], [], color="0.3", marker=r"$\uparrow$", **CLIPPED_MARK), CLIPPED_TEXT)
    return extra


def _drawn_extras(expected: dict[str, tuple[Line2D, str]], counts: _Counts) -> list[tuple[Line2D, str]]:
    """The legend entries of ``expected`` whose marks were drawn so far."""
    return [entry for kind, entry in expected.items() if counts.marked.get(kind) or getattr(counts, kind, 0)]


def _allowed_range(
    pooled: pd.DataFrame, summary: pd.DataFrame, measure: PanelRow, opts: LineOptions
) -> tuple[float, float] | None:
    """The range a summarized value may take before it is clipped: ``CLIP_DECADES`` decades around
    the range of the values of the panel's seeds that did not diverge (all seeds when every one
    did); on a linear axis, that many decades of the range's magnitude. None: nothing is clipped."""
    if not opts.clip or pooled.empty:
        return None
    healthy = pooled.loc[pooled["outcome"] != Outcome.DIVERGED, "value"]
    values = (healthy if len(healthy) else summary["y"]).to_numpy(np.float64)
    values = values[np.isfinite(values) & ((values > 0) if measure.log else True)]
    if not len(values):
        return None
    factor = 10.0**CLIP_DECADES
    if measure.log:
        return float(values.min()) / factor, float(values.max()) * factor
    scale = max(float(np.abs(values).max()), np.finfo(np.float32).tiny) * factor
    return -scale, scale


def _draw_lines(
    ax: plt.Axes,
    summary: pd.DataFrame,
    pooled: pd.DataFrame,
    measure: PanelRow,
    x: str,
    colours: Colours | None,
    styles: dict,
    opts: LineOptions,
    counts: _Counts,
    allowed: tuple[float, float] | None,
) -> None:
    """One line (and band) per hue and style level of the panel's pooled rows; exact zeros as ▽ on a
    log axis; values outside ``allowed`` as arrows at the panel's edge; the seeds themselves instead
    of a band where a line has fewer than ``MIN_BAND_SEEDS``."""
    counts.hidden += _coinciding(summary, x)
    for (hue, style), line in summary.groupby(["_hue", "_style"], sort=False):
        colour = colours[hue] if colours is not None else "C0"
        linestyle, marker = styles.get(style, ("-", None))
        shown = line.assign(y=line["y"].where(line["y"] > 0)) if (measure.log or opts.drop_zero) else line
        if allowed is not None:
            outside = shown["y"].notna() & ~shown["y"].between(*allowed)
            counts.clipped += _mark_clipped(ax, shown.loc[outside, x], shown.loc[outside, "y"] > allowed[1], colour)
            shown = shown.assign(
                y=shown["y"].where(~outside), low=shown["low"].clip(*allowed), high=shown["high"].clip(*allowed)
            )
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
        few = opts.band and line["count"].min() < MIN_BAND_SEEDS
        if few:
            mine = pooled[(pooled["_hue"] == hue) & (pooled["_style"] == style)]
            counts.seed_lines |= _draw_seeds(ax, mine, x, colour, linestyle, measure.log, allowed)
        elif opts.band and shown["low"].notna().any():
            ax.fill_between(shown[x], shown["low"], shown["high"], color=colour, alpha=0.2, linewidth=0)
        zeros = line[line["y"] == 0]
        if len(zeros) and not opts.drop_zero and measure.log:
            counts.zero += len(zeros)
            ax.plot(zeros[x], np.full(len(zeros), 0.02), transform=ax.get_xaxis_transform(), color=colour, **ZERO_MARK)


def _seed_values(rows: pd.DataFrame, log: bool) -> pd.Series:
    return rows["value"].where(rows["value"] > 0) if log else rows["value"]


def _draw_seeds(
    ax: plt.Axes,
    rows: pd.DataFrame,
    x: str,
    colour: object,
    linestyle: str,
    log: bool,
    allowed: tuple[float, float] | None,
) -> set:
    """Each seed of a line with too few seeds for a band, thin, in the line's colour; returns the
    (study, cell, seed) drawn."""
    drawn = set()
    for key, seed in rows.groupby([*KEY, "seed"], sort=False):
        seed = seed.sort_values(x)
        values = _seed_values(seed, log)
        if allowed is not None:
            values = values.where(values.between(*allowed))
        ax.plot(seed[x], values, color=colour, linestyle=linestyle, label="_seed", **SEED_LINE)
        drawn.add(key)
    return drawn


def _draw_apart(
    ax: plt.Axes,
    apart: pd.DataFrame,
    summary: pd.DataFrame,
    measure: PanelRow,
    x: str,
    colours: Colours | None,
    styles: dict,
    counts: _Counts,
) -> None:
    """One thin dotted line per seed of ``apart``, inside the range of the pooled lines (or, with
    none, the seeds' own): a value outside it is drawn at the panel's edge and counted."""
    if apart.empty:
        return
    reference = summary[["y", "low", "high"]].to_numpy(np.float64).ravel()
    reference = reference[np.isfinite(reference) & ((reference > 0) if measure.log else True)]
    bounds = (float(reference.min()), float(reference.max())) if len(reference) else None
    for (hue, style, *key), seed in apart.groupby(["_hue", "_style", *KEY, "seed"], sort=False):
        colour = colours[hue] if colours is not None else "C0"
        seed = seed.sort_values(x)
        values = _seed_values(seed, measure.log)
        if bounds is not None:
            outside = values.notna() & ~values.between(*bounds)
            counts.clipped += _mark_clipped(ax, seed.loc[outside, x], values[outside] > bounds[1], colour)
            values = values.where(~outside)
        ax.plot(seed[x], values, color=colour, label="_apart", gid=styles.get(style, ("-",))[0], **APART_LINE)
        counts.apart.add(tuple(key))


def _mark_clipped(ax: plt.Axes, xs: pd.Series, above: pd.Series, colour: object) -> int:
    """Arrows at the top (``above``) or bottom edge of the panel at ``xs``, for values off the axis."""
    for x_value, up in zip(xs, above, strict=True):
        ax.plot(
            [x_value],
            [0.97 if up else 0.07],
            transform=ax.get_xaxis_transform(),
            color=colour,
            marker=r"$\uparrow$" if up else r"$\downarrow$",
            **CLIPPED_MARK,
        )
    return len(xs)


def _dress_axes(
    ax: plt.Axes, panel: Panel, measure: PanelRow, rows: pd.DataFrame, xlabel: str, opts: LineOptions
) -> None:
    ax.set(xlabel=xlabel, ylabel=measure.ylabel, title=panel.title)
    ax.set_yscale("log" if measure.log else "linear")
    if opts.signed_log_x and len(rows):
        signed_log_axis(ax, rows)
    if opts.log_x:
        ax.set_xscale("log")
    if opts.integer_x:
        integer_ticks(ax)


def _line_notes(study: Study, lost: pd.DataFrame, unshared: list[str], counts: _Counts) -> list[str]:
    notes = []
    if unshared:
        notes.append(
            f"Y axes not shared for {', '.join(unshared)}: the panels' ranges differ by more than {SHARED_SCALE_DECADES:g} decades."
        )
    if counts.marked.get(Outcome.DIVERGED):
        n = lost.loc[lost["outcome"] == Outcome.DIVERGED, [*KEY, "seed"]].drop_duplicates().shape[0]
        notes.append(f"✕ marks where each of the {n} diverged seed(s) diverged.")
    if counts.marked.get(Outcome.COLLAPSED):
        n = lost.loc[lost["outcome"] == Outcome.COLLAPSED, [*KEY, "seed"]].drop_duplicates().shape[0]
        notes.append(
            f"⊘ marks the step from which each of the {n} collapsed seed(s) had no gradient left and its loss stayed "
            "at chance; collapsed seeds are left out of the final metrics, like diverged ones."
        )
    if counts.rated:
        notes.append(
            "Faint lines on the right-hand axis: the learning rate of each scheduled line at every step "
            "(steps.parquet) as a fraction of its peak (optim.lr); lines whose rate stays constant have none."
        )
    if counts.hidden:
        notes.append(
            f"{counts.hidden} line(s) coincide exactly with another line of their panel and are hidden under it "
            "(for example cells that share their initialization, at step 0)."
        )
    if counts.zero:
        notes.append(f"{counts.zero} value(s) exactly 0 drawn as ▽ at the axis floor.")
    if counts.apart:
        notes.append(
            f"Dotted: the {len(counts.apart)} diverged seed(s), each at its own last healthy step, drawn apart from the "
            "pooled seeds that trained to the end; they do not set the axis."
        )
    if counts.seed_lines:
        notes.append(
            f"Lines with fewer than {MIN_BAND_SEEDS} seeds have no band; their {len(counts.seed_lines)} seed(s) are drawn thin."
        )
    if counts.clipped:
        notes.append(
            f"{counts.clipped} value(s) lay off the axis and are drawn as ↑/↓ at the panel's edge: diverged seeds' values "
            f"outside the range of the other lines, or means more than {CLIP_DECADES:g} decades outside the healthy "
            "seeds' range."
        )
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


def _draw_rates(
    ax: plt.Axes,
    rated: pd.DataFrame,
    panel: Panel,
    x: str,
    colours: Colours | None,
) -> int:
    """The panel's learning rates (each a fraction of its peak) on a twin axis under its lines, one
    per hue and style level (the mean over that line's cells), from 0 to 1. Returns how many."""
    mine = rated[(rated["_row"] == panel.row) & (rated["_col"] == panel.col)]
    if mine.empty:
        return 0
    twin = ax.twinx()
    count = 0
    for (hue, _style), line in mine.groupby(["_hue", "_style"], sort=False):
        rate = line.groupby(x)["lr"].mean()
        colour = colours[hue] if colours is not None else "C0"
        twin.plot(rate.index, rate.to_numpy(), color=colour, label="_rate", **RATE_LINE)
        count += 1
    twin.set_ylim(0, 1.05)
    twin.set_ylabel(RATE_AXIS, color="0.5", fontsize=8)
    twin.tick_params(axis="y", colors="0.5", labelsize=7)
    ax.set_zorder(twin.get_zorder() + 1)  # the curves in front, the rate behind them
    ax.patch.set_visible(False)
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


def _comparable(rows: pd.DataFrame) -> bool:
    """Whether panels of one measure can share an axis: their largest magnitudes lie within
    ``SHARED_SCALE_DECADES`` decades of each other."""
    peaks = rows["value"].abs().groupby([rows["_row"], rows["_col"]]).max()
    peaks = peaks[peaks > 0]
    return len(peaks) < 2 or float(np.log10(peaks.max() / peaks.min())) <= SHARED_SCALE_DECADES


def _lost_in_panels(study: Study, frame: pd.DataFrame, enc: Encoding) -> pd.DataFrame:
    """Each diverged or collapsed seed with the panels it appears in, and its colour label when the
    colour is a config key (a per-layer colour has no single colour for a seed)."""
    columns = [*KEY, "_col", "_row"] + (["_hue"] if set(enc.hue) <= set(study.cells.columns) else [])
    return lost_seeds(study).merge(frame[columns].drop_duplicates(), on=KEY)


def _mark_lost(
    ax: plt.Axes,
    rows: pd.DataFrame,
    lost: pd.DataFrame,
    panel: Panel,
    x: str,
    colours: Colours | None,
    where: DivergenceMark,
    counts: _Counts,
) -> None:
    """A mark at each lost seed of the panel: ✕ at the step it diverged, ⊘ at the step from which it
    collapsed; at the height of its value there (``line``: its last value up to that step) or on the
    x axis (``axis``)."""
    mine = lost[(lost["_row"] == panel.row) & (lost["_col"] == panel.col)]
    for seed in mine.to_dict("records"):
        colour = colours[seed["_hue"]] if colours is not None and seed.get("_hue") in colours.colours else "0.6"
        style = lost_mark(seed["outcome"], colour)
        if where is DivergenceMark.LINE:
            own = rows[
                (rows["study"] == seed["study"])
                & (rows["cell"] == seed["cell"])
                & (rows["seed"] == seed["seed"])
                & (rows[x] <= seed["at"])
            ]
            if own.empty:
                continue
            ax.plot([seed["at"]], [own.loc[own[x].idxmax(), "value"]], **style)
        else:
            ax.plot([seed["at"]], [0.03], transform=ax.get_xaxis_transform(), **style)
        counts.marked[seed["outcome"]] = counts.marked.get(seed["outcome"], 0) + 1


def learning_curves(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Training loss (log) and test accuracy against step: mean over seeds with a 95% t band, ✕
    where a seed diverged (on its last evaluation, the frozen state at its last healthy step), and
    the learning rate faintly under them when a schedule changes it."""
    data = study.curves.assign(measure=study.curves["split"] + " " + study.curves["metric"])
    measures = [
        PanelRow("train loss", "training loss (cross-entropy, nats)", log=True, summary=Summary.POSITIVE),
        PanelRow("test accuracy", "test accuracy (fraction)", summary=Summary.FRACTION),
    ]
    enc = encode(study, data, hue, style, col, row, wrap)
    title = "Learning curves (mean over seeds, 95% t band)"
    return line_figure(study, data, measures, "step", STEP_LABEL, title, enc, rates=scheduled_rates(study))


def scheduled_rates(study: Study) -> pd.DataFrame | None:
    """The learning rate of each cell whose rate changes over training (a schedule) at each step
    (``steps.parquet``), as a fraction of the cell's peak, so that schedules of different peaks
    share one axis; None when every cell keeps one rate."""
    rates = study.steps[[*KEY, "step", "lr"]].drop_duplicates([*KEY, "step"])
    peak = rates.groupby(KEY)["lr"].transform("max")
    changing = rates.groupby(KEY)["lr"].transform("nunique") > 1
    if not changing.any():
        return None
    return rates[changing].assign(lr=(rates["lr"] / peak)[changing])


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
