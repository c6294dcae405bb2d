"""Figures: one function per figure; each takes a ``Study`` and returns a ``Plot`` (pages and notes).

Every function takes ``hue=``, ``style=``, ``col=`` and ``row=`` (config keys, ``study``, or the
figure's own keys such as ``layer``) and ``wrap=`` (panels per line); ``gradstudy.show.encoding`` picks
what the user leaves open from the study's varying keys. Colours come from one mapping per figure,
panels of one measure share their y axis, and a figure taller than about 2,400 px is split into
pages. Divergence is drawn: ✕ where a seed diverged, hatching after divergence on heat maps, and
``end`` is each seed's last healthy step (``analysis.phase_layers``).

This module does not choose a matplotlib backend: the command-line tools do, so a notebook keeps its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator
from scipy import stats as sps

from gradstudy import analysis
from gradstudy.analysis.convergence import steps_to_target
from gradstudy.analysis.predictions import Predictions, predicted_layers
from gradstudy.schema import KEY
from gradstudy.show.encoding import (
    DPI,
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
from gradstudy.show.present import label_of
from gradstudy.store.study import Study

STEP_LABEL = "step (parameter updates)"
LAYER_LABEL = "hidden layer (1 = next to the input)"
#: Past this many decades between panel medians, a heat map gets one colour scale per line of panels.
SHARED_SCALE_DECADES = 3.0
DIVERGED_MARK = dict(marker="X", markersize=8, markeredgecolor="black", markeredgewidth=0.8, linestyle="none", zorder=5)
ZERO_MARK = dict(marker="v", markersize=7, markerfacecolor="none", markeredgewidth=1.2, linestyle="none", zorder=5)
DIVERGED_TEXT = "✕ a seed diverged here"
ZERO_TEXT = "▽ exactly 0, drawn at the axis floor"
OVERLAY_LINE = dict(linestyle=(0, (4, 2)), linewidth=1.3, zorder=4)
OVERLAY_TEXT = "dashed: mean-field prediction (step 0)"


@dataclass
class Plot:
    """A figure: its pages (one figure each, at most about 2,400 x 2,400 px at ``DPI``), the notes
    a caption should carry (colour scale, zeros, how ``end`` is timed) and the encoding used."""

    pages: list[plt.Figure]
    encoding: Encoding
    notes: list[str] = field(default_factory=list)

    def save(self, folder: Path, name: str, formats: Sequence[str] = ("png",), dpi: int = DPI) -> list[Path]:
        """Write ``folder/name.<fmt>`` (``name_p1``, ``name_p2``, … when there are several pages) and close the pages."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for number, fig in enumerate(self.pages, start=1):
            stem = name if len(self.pages) == 1 else f"{name}_p{number}"
            for fmt in formats:
                path = folder / f"{stem}.{fmt}"
                fig.savefig(path, dpi=dpi, bbox_inches="tight")
                paths.append(path)
        self.close()
        return paths

    def close(self) -> None:
        for fig in self.pages:
            plt.close(fig)


@dataclass(frozen=True)
class Measure:
    """One row of panels: the rows of the data whose ``measure`` is ``name``.

    ``summary`` says how seeds are combined: ``mean`` (with a t interval) or ``gmean`` (geometric
    mean of the positive values with the log-scale interval, as ``analysis.log_mean_ci``)."""

    name: str
    ylabel: str
    log: bool = False
    summary: str = "mean"


# ----- data prepared for the encoding ------------------------------------------------------------
def _keyed(study: Study, data: pd.DataFrame, enc: Encoding) -> pd.DataFrame:
    """``data`` with the config keys the encoding uses and a label column per channel."""
    used = [k for k in (*enc.hue, *enc.style, *enc.col, *enc.row) if k not in data.columns]
    frame = (
        data.merge(study.cells[[*KEY, *dict.fromkeys(k for k in used if k != "study")]], on=KEY)
        if used
        else data.copy()
    )
    order = [k for k in (*enc.row, *enc.col, *enc.hue, *enc.style)]
    frame = frame.sort_values([*dict.fromkeys(order)], kind="stable") if order else frame
    for channel, named in (("hue", False), ("style", False), ("col", True), ("row", True)):
        keys = getattr(enc, channel)
        frame[f"_{channel}"] = _labels(frame, keys, named)
    return frame


def _labels(frame: pd.DataFrame, keys: Sequence[str], named: bool) -> pd.Series:
    if not keys:
        return pd.Series("", index=frame.index)
    combos = frame[list(keys)].drop_duplicates()
    text = {tuple(r): label_of(r, keys, named) for _, r in combos.iterrows()}
    return pd.Series([text[tuple(v)] for v in frame[list(keys)].itertuples(index=False)], index=frame.index)


def _levels(frame: pd.DataFrame, column: str) -> list[str]:
    return [v for v in dict.fromkeys(frame[column]) if v != ""]


def _summarize(values: pd.DataFrame, by: list[str], summary: str) -> pd.DataFrame:
    """Per group of ``by``: ``y`` (mean, or geometric mean of the positive values: 0 when there are
    none) and ``low``/``high`` (95% t interval, on the logs for ``gmean``) over seeds."""
    x = np.log(values["value"].where(values["value"] > 0)) if summary == "gmean" else values["value"]
    out = values.assign(_x=x).groupby(by, sort=False)["_x"].agg(["mean", "std", "count"]).reset_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = sps.t.ppf(0.975, out["count"] - 1) * out["std"] / np.sqrt(out["count"])
    half = half.where(out["count"] > 1)
    if summary == "gmean":
        out["y"] = np.exp(out["mean"]).where(out["count"] > 0, 0.0)
        out["low"], out["high"] = np.exp(out["mean"] - half), np.exp(out["mean"] + half)
    else:
        out["y"], out["low"], out["high"] = out["mean"], out["mean"] - half, out["mean"] + half
    return out


def _signed_log_axis(ax: plt.Axes, bins: pd.DataFrame) -> None:
    """For signed-log bins (widths that grow with the magnitude), a symmetric-log x axis, linear
    within the smallest edge magnitude, with ticks 0 and ±10^k every third decade. Linear bins
    (bounded activations) keep a linear axis."""
    widths = bins["bin_right"] - bins["bin_left"]
    if widths.max() <= 1.5 * widths.min():
        return
    edges = np.abs(bins[["bin_left", "bin_right"]].to_numpy(np.float64))
    linthresh, top = float(edges[edges > 0].min()), float(edges.max())
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.xaxis.set_minor_locator(NullLocator())
    decades = np.arange(np.ceil(np.log10(linthresh)) + 3, np.log10(top) + 1e-9, 3)
    ticks = [*(-(10.0 ** decades[::-1])), 0.0, *(10.0**decades)]
    ax.set_xticks(ticks, ["0" if t == 0 else f"{'-' if t < 0 else ''}1e{int(round(np.log10(abs(t))))}" for t in ticks])


def _integer_ticks(ax: plt.Axes, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _diverged(study: Study) -> pd.DataFrame:
    return study.seeds.dropna(subset=["diverged_at"]).astype({"diverged_at": np.int64})


# ----- the line figures -----------------------------------------------------------------------------
def _line_figure(
    study: Study,
    data: pd.DataFrame,
    measures: Sequence[Measure],
    x: str,
    xlabel: str,
    title: str,
    enc: Encoding,
    band: bool = True,
    divergence: str | None = "line",
    integer_x: bool = False,
    signed_log_x: bool = False,
    drop_zero: bool = False,
    overlay: pd.DataFrame | None = None,
) -> Plot:
    """Panels by ``enc.row`` x ``enc.col`` (wrapped), one line of panels per measure; in each panel
    one line per hue and style level against ``x``, the seeds summarized per ``Measure.summary``.

    ``divergence``: ``line`` puts ✕ on each diverged seed's last point (x is the step), ``axis``
    puts ✕ on the panel's x axis at the step, None draws none. ``drop_zero`` leaves out points
    whose summary is 0 (empty histogram bins) instead of marking them at the axis floor.
    ``overlay`` (study, cell, measure, ``x``, value: one value per cell, no seeds) is drawn dashed
    in each line's colour, averaged over the line's cells like the measure.
    """
    frame = _keyed(study, data[data["measure"].isin([m.name for m in measures])], enc)
    drawn = _keyed(study, overlay, enc) if overlay is not None and len(overlay) else None
    colours = colours_for(frame, enc.hue, "_hue") if enc.hue else None
    styles = styles_for(_levels(frame, "_style")) if enc.style else {}
    diverged = _diverged_in_panels(study, frame, enc)
    if divergence == "line":  # a diverged seed's last evaluation is its ✕, not a point of the mean
        last = frame.merge(diverged[[*KEY, "seed", "diverged_at"]].drop_duplicates(), on=[*KEY, "seed"], how="left")[
            "diverged_at"
        ]
        frame = frame[~(last.to_numpy() == frame[x].to_numpy())]
    plan = layout(_levels(frame, "_row"), _levels(frame, "_col"), [m.name for m in measures], enc.wrap)
    unshared = [m.name for m in measures if not _comparable(frame[frame["measure"] == m.name])]
    pages, n_zero, n_marked, n_hidden, n_overlaid = [], 0, 0, 0, 0
    for fig, panels in plan.figures(title, legend_inches(colours, list(styles), [DIVERGED_TEXT, ZERO_TEXT])):
        shared: dict[str, plt.Axes] = {}
        for panel, ax in panels.items():
            measure = next(m for m in measures if m.name == panel.measure)
            if measure.name in shared and measure.name not in unshared:
                ax.sharey(shared[measure.name])
            shared.setdefault(measure.name, ax)
            rows = frame[
                (frame["_row"] == panel.row) & (frame["_col"] == panel.col) & (frame["measure"] == measure.name)
            ]
            if rows.empty:
                ax.text(
                    0.5,
                    0.5,
                    _why_empty(study, frame[(frame["_row"] == panel.row) & (frame["_col"] == panel.col)]),
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                )
            summary = _summarize(rows, ["_hue", "_style", x], measure.summary).sort_values(x)
            n_hidden += _coinciding(summary, x)
            for (hue, style), line in summary.groupby(["_hue", "_style"], sort=False):
                colour = colours[hue] if colours is not None else "C0"
                linestyle, marker = styles.get(style, ("-", None))
                shown = line.assign(y=line["y"].where(line["y"] > 0)) if (measure.log or drop_zero) else line
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
                if band and shown["low"].notna().any():
                    ax.fill_between(shown[x], shown["low"], shown["high"], color=colour, alpha=0.2, linewidth=0)
                zeros = line[line["y"] == 0]
                if len(zeros) and not drop_zero and measure.log:
                    n_zero += len(zeros)
                    ax.plot(
                        zeros[x],
                        np.full(len(zeros), 0.02),
                        transform=ax.get_xaxis_transform(),
                        color=colour,
                        **ZERO_MARK,
                    )
            if drawn is not None:
                n_overlaid += _draw_overlay(ax, drawn, panel, measure, x, colours, styles)
            if divergence is not None:
                n_marked += _mark_divergence(
                    ax, data[data["measure"] == measure.name], diverged, panel, x, colours, divergence
                )
            ax.set(xlabel=xlabel, ylabel=measure.ylabel, title=panel.title)
            ax.set_yscale("log" if measure.log else "linear")
            if signed_log_x and len(rows):
                _signed_log_axis(ax, rows)
            if integer_x:
                _integer_ticks(ax)
        extra = []
        if n_marked:
            extra.append((Line2D([], [], markerfacecolor="0.6", **DIVERGED_MARK), DIVERGED_TEXT))
        if n_zero:
            extra.append((Line2D([], [], color="0.3", **ZERO_MARK), ZERO_TEXT))
        if n_overlaid:
            extra.append((Line2D([], [], color="0.3", **OVERLAY_LINE), OVERLAY_TEXT))
        add_legend(fig, list(panels.values()), colours, styles, ", ".join(enc.style), extra)
        pages.append(fig)
    notes = []
    if unshared:
        notes.append(
            f"Y axes not shared for {', '.join(unshared)}: the panels' ranges differ by more than {SHARED_SCALE_DECADES:g} decades."
        )
    if n_marked:
        notes.append(f"✕ marks where each of the {len(_diverged(study))} diverged seed(s) diverged.")
    if n_hidden:
        notes.append(
            f"{n_hidden} line(s) coincide exactly with another line of their panel and are hidden under it "
            "(for example cells that share their initialization, at step 0)."
        )
    if n_zero:
        notes.append(f"{n_zero} value(s) exactly 0 drawn as ▽ at the axis floor.")
    return Plot(pages, enc, notes)


def _draw_overlay(
    ax: plt.Axes,
    drawn: pd.DataFrame,
    panel: Panel,
    measure: Measure,
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
    return _diverged(study).merge(frame[columns].drop_duplicates(), on=KEY)


def _comparable(rows: pd.DataFrame) -> bool:
    """Whether panels of one measure can share an axis: their largest magnitudes lie within
    ``SHARED_SCALE_DECADES`` decades of each other."""
    peaks = rows["value"].abs().groupby([rows["_row"], rows["_col"]]).max()
    peaks = peaks[peaks > 0]
    return len(peaks) < 2 or float(np.log10(peaks.max() / peaks.min())) <= SHARED_SCALE_DECADES


def _mark_divergence(
    ax: plt.Axes, rows: pd.DataFrame, diverged: pd.DataFrame, panel: Panel, x: str, colours: Colours | None, where: str
) -> int:
    """✕ at each diverged seed of the panel, at the step it diverged: at the height of its last
    recorded value (``line``) or on the x axis (``axis``)."""
    mine = diverged[(diverged["_row"] == panel.row) & (diverged["_col"] == panel.col)]
    count = 0
    for seed in mine.to_dict("records"):
        colour = colours[seed["_hue"]] if colours is not None and seed.get("_hue") in colours.colours else "0.6"
        if where == "line":
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
        Measure("train loss", "training loss (cross-entropy, nats)", log=True),
        Measure("test accuracy", "test accuracy (fraction)"),
    ]
    enc = encode(study, data, hue, style, col, row, wrap)
    return _line_figure(study, data, measures, "step", STEP_LABEL, "Learning curves (mean over seeds, 95% t band)", enc)


def _profile(
    study: Study,
    stats: Sequence[tuple[str, str, bool]],
    title: str,
    hue: Keys,
    style: Keys,
    col: Keys,
    row: Keys,
    wrap: int,
) -> Plot:
    """Rows: each stat at the start and at the end (``analysis.phase_layers``); x: layer. The
    start rows carry the mean-field prediction (``gradstudy.analysis.predictions``) dashed, where it applies."""
    phased = analysis.phase_layers(study)
    phased = phased[phased["stat"].isin([s for s, _, _ in stats])]
    data = phased.assign(measure=phased["stat"] + "@" + phased["phase"])
    when = {
        "start": "start (step 0)",
        "end": "end (each seed's last healthy step)" if phased["ended_early"].any() else "end",
    }
    measures = [
        Measure(f"{stat}@{phase}", f"{label}\n{when[phase]}", log, "gmean" if log else "mean")
        for phase in ("start", "end")
        for stat, label, log in stats
    ]
    enc = encode(study, data, hue, style, col, row, wrap)
    predicted = predicted_layers(study)
    overlay = predicted.layers[predicted.layers["stat"].isin([s for s, _, _ in stats])]
    overlay = overlay.assign(measure=overlay["stat"] + "@start")
    plot = _line_figure(
        study, data, measures, "layer", LAYER_LABEL, title, enc, divergence=None, integer_x=True, overlay=overlay
    )
    plot.notes.append(
        f"Lines: geometric mean over seeds of positive magnitudes, mean otherwise; 95% t band. "
        f"End: {analysis.end_steps_text(phased)}."
    )
    plot.notes.extend(prediction_notes(predicted, overlay))
    return plot


def prediction_notes(predicted: Predictions, overlay: pd.DataFrame) -> list[str]:
    """What the dashed lines are, and which cells have none and why."""
    notes = []
    if len(overlay):
        anchored = " δ is anchored at the measured last hidden layer." if (overlay["stat"] == "delta_std").any() else ""
        notes.append(f"Dashed: the mean-field prediction at step 0 (gradstudy.theory), for the start only.{anchored}")
    for reason, cells in predicted.skipped.groupby("reason", sort=False)["cell"]:
        notes.append(f"No prediction for {len(cells)} cell(s) ({', '.join(cells)}): {reason}.")
    return notes


def gradient_profile(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Std of the back-propagated gradient δ and the weight-gradient norm against layer, at the
    start and the end (log scale, geometric mean over seeds): a slope means vanishing or exploding gradients."""
    stats = [("delta_std", "std of δ = B·∂L/∂z", True), ("grad_norm", "‖∂L/∂W‖", True)]
    return _profile(
        study, stats, "Gradient profile across layers (Glorot & Bengio fig. 7 style)", hue, style, col, row, wrap
    )


def activation_profile(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Mean (linear) and standard deviation (log, geometric mean over seeds) of the activations against layer, at the start and the end."""
    stats = [("act_mean", "activation mean", False), ("act_std", "activation std", True)]
    return _profile(study, stats, "Activation profile across layers", hue, style, col, row, wrap)


def variance_profile(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Std of each layer's pre-activation z_l and of its activation h_l against layer, at the start
    and the end (log scale): a layer whose z spreads far more than the h it gets is amplifying."""
    stats = [("z_std", "std of z (input to φ)", True), ("act_std", "std of h = φ(z)", True)]
    return _profile(study, stats, "Spread of z and h across layers", hue, style, col, row, wrap)


def _over_training(
    study: Study, stats: Sequence[tuple[str, str]], title: str, hue: Keys, style: Keys, col: Keys, row: Keys, wrap: int
) -> Plot:
    """Rows: ``stats``; by default one panel per cell with one line per layer (mean over seeds) against step."""
    data = study.layers[study.layers["stat"].isin([s for s, _ in stats])].rename(columns={"stat": "measure"})
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("layer",), own_hue="layer")
    measures = [Measure(stat, label) for stat, label in stats]
    return _line_figure(study, data, measures, "step", STEP_LABEL, title, enc, band=False, divergence="axis")


def activation_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Mean and standard deviation of each layer's activations over training (Glorot & Bengio fig. 2 style)."""
    stats = [("act_mean", "activation mean"), ("act_std", "activation std")]
    return _over_training(
        study, stats, "Activations per layer over training (mean over seeds)", hue, style, col, row, wrap
    )


def negative_frac_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Fraction of each layer's units with z <= 0 on every example of the batch, over training (a
    rectifier's units that pass no signal; dead for ReLU)."""
    stats = [("negative_frac", "units with z ≤ 0\non every example")]
    return _over_training(
        study, stats, "Units at z ≤ 0 per layer over training (mean over seeds)", hue, style, col, row, wrap
    )


def unit_mean_median_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Median over units of each unit's batch-mean activation, per layer over training (Clevert et al. 2015's mean shift)."""
    stats = [("unit_mean_median", "median over units\nof the mean activation")]
    return _over_training(
        study, stats, "Mean shift of the activations per layer (mean over seeds)", hue, style, col, row, wrap
    )


SATURATION_STATS = {"saturated_frac": "saturated fraction\n(of unit·examples)", "dead_frac": "dead fraction (of units)"}


def saturation_over_training(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Saturated and dead fractions per layer over training (only the statistics defined for each activation)."""
    present = [s for s in SATURATION_STATS if study.layers["stat"].eq(s).any()]
    stats = [(s, SATURATION_STATS[s]) for s in present]
    return _over_training(
        study, stats, "Saturated and dead units per layer (mean over seeds)", hue, style, col, row, wrap
    )


PERCENTILES = {"z_p15": "15th", "z_p50": "50th", "z_p85": "85th"}


def unit_percentiles(
    study: Study,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    units: int = 4,
) -> Plot:
    """15th, 50th and 85th percentiles of single units' pre-activation in the last hidden layer over
    training, one row of panels per unit (mean over seeds; Ioffe & Szegedy fig. 1b, c follow one unit)."""
    rows = study.units[study.units["unit"] < units]
    rows = rows[rows["layer"] == rows.groupby(KEY)["layer"].transform("max")]
    data = rows.assign(percentile=rows["stat"].map(PERCENTILES), measure="unit " + rows["unit"].astype(str))
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("percentile",), own_hue="percentile")
    measures = [
        Measure(f"unit {j}", f"z percentiles,\nlast hidden layer, unit {j}") for j in sorted(rows["unit"].unique())
    ]
    return _line_figure(
        study,
        data,
        measures,
        "step",
        STEP_LABEL,
        "Single units' pre-activation percentiles over training (mean over seeds)",
        enc,
        band=False,
        divergence="axis",
    )


def preactivation_percentiles(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """15th, 50th and 85th percentiles of the first and last hidden layers' pre-activation over training
    (mean over seeds; Ioffe & Szegedy fig. 1)."""
    rows = study.layers[study.layers["stat"].isin(list(PERCENTILES))]
    depth = rows.groupby(KEY)["layer"].transform("max")
    rows = rows[(rows["layer"] == 1) | (rows["layer"] == depth)]
    data = rows.assign(percentile=rows["stat"].map(PERCENTILES), measure=np.where(rows["layer"] == 1, "first", "last"))
    enc = encode(study, data, hue, style, col, row, wrap, own_keys=("percentile",), own_hue="percentile")
    measures = [
        Measure("first", "z percentiles,\nfirst hidden layer"),
        Measure("last", "z percentiles,\nlast hidden layer"),
    ]
    return _line_figure(
        study,
        data,
        measures,
        "step",
        STEP_LABEL,
        "Pre-activation percentiles over training (mean over seeds)",
        enc,
        band=False,
        divergence="axis",
    )


def histograms(
    study: Study, hue: Keys = None, style: Keys = None, col: Keys = None, row: Keys = None, wrap: int = WRAP
) -> Plot:
    """Per-layer histograms of activations and back-propagated gradients (Glorot & Bengio fig. 6 style).

    One line of panels per (quantity, step). The y axis is the fraction of a layer's entries in each
    bin (zeros and out-of-range values count in the total), mean over seeds, on a log scale so that
    tails stay visible. Signed-log bins (δ, unbounded activations) are drawn on a symmetric-log x
    axis whose linear part is the range's smallest magnitude.
    """
    hists = study.hists
    totals = hists.groupby([*KEY, "seed", "step", "layer", "quantity"])["count"].transform("sum")
    bins = hists.assign(value=hists["count"] / totals)[hists["region"] == "bin"]
    bins = bins.assign(
        center=(bins["bin_left"] + bins["bin_right"]) / 2,
        measure=bins["quantity"] + " at step " + bins["step"].astype(str),
    )
    names = {"activation": "activation value", "delta": "δ = B·∂L/∂z"}
    measures = [
        Measure(
            f"{quantity} at step {step}", f"fraction per bin\n{names.get(quantity, quantity)}, step {step}", log=True
        )
        for quantity, step in bins[["quantity", "step"]]
        .drop_duplicates()
        .sort_values(["quantity", "step"])
        .itertuples(index=False)
    ]
    enc = encode(study, bins, hue, style, col, row, wrap, own_keys=("layer",), own_hue="layer")
    return _line_figure(
        study,
        bins,
        measures,
        "center",
        "bin centre",
        "Activation and back-propagated gradient histograms per layer",
        enc,
        band=False,
        divergence=None,
        signed_log_x=True,
        drop_zero=True,
    )


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
    frame = _keyed(study, data, enc)
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
    plan = layout(_levels(frame, "_row"), _levels(frame, "_col"), ["grad_norm"], enc.wrap)
    diverged = _diverged(study).merge(frame[[*KEY, "_row", "_col"]].drop_duplicates(), on=KEY)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.75")
    pages = []
    for fig, panels in plan.figures("Weight-gradient norm by layer and step (geometric mean over seeds)", 1.3):
        mesh = None
        for panel, ax in panels.items():
            grid = grids.get((panel.row, panel.col))
            if grid is None:
                ax.set_axis_off()
                continue
            values = grid.to_numpy()
            finite = values[np.isfinite(values)]
            norm = shared_norm or (LogNorm(finite.min(), finite.max()) if len(finite) else None)
            mesh = ax.pcolormesh(
                _edges(grid.columns), _edges(grid.index), np.ma.masked_invalid(values), norm=norm, cmap=cmap
            )
            if not shared:
                bar = fig.colorbar(mesh, ax=ax, label="‖∂L/∂W‖", pad=0.02)
                bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
                bar.ax.yaxis.set_minor_formatter(NullFormatter())
            first = diverged.loc[(diverged["_row"] == panel.row) & (diverged["_col"] == panel.col), "diverged_at"]
            if len(first):
                ax.axvspan(
                    first.min(),
                    max(float(grid.columns.max()), first.min() + 1),
                    facecolor="none",
                    edgecolor="crimson",
                    hatch="//",
                    linewidth=0,
                    zorder=3,
                )
                ax.plot(
                    first,
                    np.full(len(first), 0.03),
                    transform=ax.get_xaxis_transform(),
                    color="crimson",
                    **DIVERGED_MARK,
                )
            ax.set(xlabel=STEP_LABEL, ylabel=LAYER_LABEL, title=panel.title)
            _integer_ticks(ax, "y")
        if shared and mesh is not None:
            fig.colorbar(mesh, ax=list(panels.values()), label="‖∂L/∂W‖ (log scale)", shrink=0.8)
        handles = (
            [(Patch(facecolor="none", edgecolor="crimson", hatch="//"), "after a seed of the cell diverged (✕)")]
            if len(diverged)
            else []
        )
        if sum(zeros.values()):
            handles.append((Patch(facecolor="0.75"), "exactly 0 in every seed"))
        if handles:
            fig.legend(
                [h for h, _ in handles], [t for _, t in handles], loc="outside lower center", frameon=False, fontsize=8
            )
        pages.append(fig)
    notes = [
        f"Colour: {'one log scale shared by every panel' if shared else 'one log scale per panel'}: the panels' medians span "
        f"{max(medians) - min(medians) if medians else 0:.1f} decades (shared up to {SHARED_SCALE_DECADES:g})."
    ]
    if len(diverged):
        notes.append(
            "Hatched: steps after the first seed of the cell diverged; later values average the remaining seeds."
        )
    if sum(zeros.values()):
        notes.append(f"{int(sum(zeros.values()))} layer-step value(s) exactly 0 in every seed, shown grey.")
    return Plot(pages, enc, notes)


def _edges(centres: pd.Index) -> np.ndarray:
    """Cell edges around sorted ``centres`` (halfway between neighbours; ±0.5 around a single one)."""
    c = np.asarray(centres, np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


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
    times = times.merge(study.seeds[[*KEY, "seed", "diverged_at"]], on=[*KEY, "seed"], how="left")
    data = times.assign(measure="times", value=times["step"])
    enc = encode(study, data, hue, style, col, row, wrap)
    frame = _keyed(study, data, enc)
    colours = colours_for(frame, enc.hue, "_hue") if enc.hue else None
    styles = styles_for(_levels(frame, "_style")) if enc.style else {}
    final = float(study.curves["step"].max()) if len(study.curves) else 1.0
    relation = "≥" if metric == "accuracy" else "≤"
    plan = layout(_levels(frame, "_row"), _levels(frame, "_col"), ["times", "survival"], enc.wrap)
    marks = [
        (Line2D([], [], marker="o", color="0.4", linestyle="none"), "● seed reached the target"),
        (Line2D([], [], marker=">", color="0.4", markerfacecolor="none", linestyle="none"), "▷ healthy, never reached"),
        (Line2D([], [], markerfacecolor="0.6", **DIVERGED_MARK), "✕ diverged before reaching it"),
        (Line2D([], [], marker="D", color="black", linestyle="none"), "◆ lower median, bootstrap 95% CI"),
    ]
    pages = []
    for fig, panels in plan.figures(
        f"Convergence speed: steps to {split} {metric} {relation} {target}",
        legend_inches(colours, list(styles), [t for _, t in marks]),
    ):
        for panel, ax in panels.items():
            rows = frame[(frame["_row"] == panel.row) & (frame["_col"] == panel.col)]
            cells = rows.drop_duplicates(KEY).to_dict("records")
            if panel.measure == "times":
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
                names = [" | ".join(t for t in (c["_hue"], c["_style"]) if t) or c["cell"] for c in cells]
                ax.set_yticks(range(len(cells)), names, fontsize=7)
                ax.set(
                    xlim=(-0.02 * final, final * 1.05),
                    ylim=(len(cells) - 0.4, -0.6),
                    title=panel.title,
                    xlabel=f"steps to {split} {metric} {relation} {target}",
                    ylabel=" | ".join([*enc.hue, *enc.style]) or "cell",
                )
            else:
                steps = np.sort(analysis.curves_of(study, split)["step"].unique())
                for cell in cells:
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
                ax.set(
                    xlabel=STEP_LABEL,
                    ylabel="fraction of seeds\nnot yet at target",
                    ylim=(-0.02, 1.02),
                    title=panel.title,
                )
        add_legend(fig, list(panels.values()), colours, styles, ", ".join(enc.style), marks)
        pages.append(fig)
    notes = ["Median: the lower median over the healthy seeds, finite when at least half reach the target."]
    if len(_diverged(study)):
        notes.append(
            f"✕: {len(_diverged(study))} seed(s) diverged; they count as never reaching the target after diverging."
        )
    return Plot(pages, enc, notes)


def _seed_marks(ax: plt.Axes, seeds: pd.DataFrame, y: float, colour: tuple) -> None:
    """One mark per seed on the line ``y``, jittered slightly so that equal times stay visible."""
    jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    for dy, seed in zip(jitter, seeds.itertuples(), strict=True):
        if np.isfinite(seed.step):
            ax.plot(seed.step, y + dy, marker="o", color=colour, linestyle="none", markersize=4)
        elif pd.notna(seed.diverged_at):
            ax.plot(
                seed.diverged_at, y + dy, color=colour, markerfacecolor=colour, **{**DIVERGED_MARK, "markersize": 6}
            )
        else:
            ax.plot(
                seed.last_step, y + dy, marker=">", color=colour, markerfacecolor="none", linestyle="none", markersize=5
            )


def final_accuracy(study: Study, split: str = "train") -> pd.DataFrame:
    """Each cell's mean over seeds of ``split`` accuracy at each seed's last evaluation (a diverged
    seed's frozen state counts as it stands): study, cell, accuracy, n_seeds."""
    rows = study.curves[(study.curves["split"] == split) & (study.curves["metric"] == "accuracy")]
    last = rows.sort_values("step").groupby([*KEY, "seed"])["value"].last().reset_index()
    return last.groupby(KEY)["value"].agg(accuracy="mean", n_seeds="count").reset_index()


def phase_diagram(study: Study, x: str = "init.sigma_w2", y: str = "model.depth", split: str = "train") -> Plot:
    """Heat map of the final ``split`` accuracy (mean over seeds) over two config keys, with mean-field
    theory's trainable depth 6 xi_c (Schoenholz et al. 2017) drawn over it when ``x`` is sigma_w2."""
    cells = study.cells.merge(final_accuracy(study, split), on=KEY)
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
    curve = _trainable_depth(cells, x, xs)
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


def _trainable_depth(cells: pd.DataFrame, x: str, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """6 xi_c on a fine grid of sigma_w2 across ``xs``, for the cells' one activation and bias variance."""
    from gradstudy import theory

    if x != "init.sigma_w2" or cells["act"].nunique() != 1 or "init.sigma_b2" not in cells:
        return None
    act, sigma_b2 = cells["act"].iloc[0], float(cells["init.sigma_b2"].iloc[0])
    alpha = cells["act.alpha"].iloc[0] if "act.alpha" in cells and pd.notna(cells["act.alpha"].iloc[0]) else None
    fine = np.linspace(xs.min(), xs.max(), 120)
    return fine, np.array([6 * theory.depth_scales(act, w, sigma_b2, alpha).xi_c for w in fine])


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
