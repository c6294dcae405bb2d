"""Plots and the pieces every figure module shares: the ``Plot`` pages, a row of panels
(``PanelRow``), marks and labels, the study's keys joined to the data, and the summary over seeds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from gradstudy.analysis.seeds import bounded_interval, t_half_width
from gradstudy.cells.statistics import Summary
from gradstudy.schema import KEY, Outcome
from gradstudy.show.encoding import (
    DPI,
    Encoding,
)
from gradstudy.show.present import label_of
from gradstudy.store.study import Study

STEP_LABEL = "step (parameter updates)"


LAYER_LABEL = "hidden layer (1 = next to the input)"


def layer_label(study: Study) -> str:
    """The layer axis's label: a residual net's layer l is its block l (the stream after it)."""
    models = set(study.cells["model"].dropna()) if "model" in study.cells else set()
    if models == {"resmlp"}:
        return "residual block (1 = next to the input)"
    if "resmlp" in models:
        return "layer or block\n(1 = next to the input)"
    return LAYER_LABEL


#: Past this many decades between panel medians, a heat map gets one colour scale per line of panels.
SHARED_SCALE_DECADES = 3.0


DIVERGED_MARK = dict(marker="X", markersize=8, markeredgecolor="black", markeredgewidth=0.8, linestyle="none", zorder=5)


#: A collapsed seed's mark: ⊘ in the line's colour.
COLLAPSED_MARK = dict(marker=r"$\oslash$", markersize=10, linestyle="none", zorder=5)


ZERO_MARK = dict(marker="v", markersize=7, markerfacecolor="none", markeredgewidth=1.2, linestyle="none", zorder=5)


#: Legend texts: the legend's handle draws the glyph, so the text does not repeat it.
DIVERGED_TEXT = "a seed diverged here"


COLLAPSED_TEXT = "a seed collapsed from here\n(no gradient, loss at chance)"


ZERO_TEXT = "exactly 0, at the axis floor"


OVERLAY_LINE = dict(linestyle=(0, (4, 2)), linewidth=1.3, zorder=4)


OVERLAY_TEXT = "mean-field prediction (step 0)"


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


class DivergenceMark(StrEnum):
    """Where a line figure puts ✕ for a diverged seed: on its last point (the x axis is the step),
    or on the panel's x axis at the step it diverged."""

    LINE = "line"
    AXIS = "axis"


@dataclass(frozen=True)
class PanelRow:
    """One row of panels: the rows of the data whose ``measure`` is ``name``.

    ``summary`` says how seeds are combined: arithmetic (the mean with a t interval) or geometric
    (the geometric mean of the positive values with the log-scale interval, as ``analysis.log_mean_ci``)."""

    name: str
    ylabel: str
    log: bool = False
    summary: Summary = Summary.ARITHMETIC


# ----- data prepared for the encoding ------------------------------------------------------------
def keyed(study: Study, data: pd.DataFrame, enc: Encoding) -> pd.DataFrame:
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
        frame[f"_{channel}"] = labels_of(frame, keys, named)
    return frame


def labels_of(frame: pd.DataFrame, keys: Sequence[str], named: bool) -> pd.Series:
    if not keys:
        return pd.Series("", index=frame.index)
    combos = frame[list(keys)].drop_duplicates()
    text = {_lookup(r): label_of(r, keys, named) for _, r in combos.iterrows()}
    return pd.Series([text[_lookup(v)] for v in frame[list(keys)].itertuples(index=False)], index=frame.index)


def _lookup(values: Iterable[object]) -> tuple:
    """A row's values as a dict key: NaN (a null key) is never equal to itself, None is."""
    return tuple(None if isinstance(v, float) and np.isnan(v) else v for v in values)


def levels(frame: pd.DataFrame, column: str) -> list[str]:
    return [v for v in dict.fromkeys(frame[column]) if v != ""]


def summarize(values: pd.DataFrame, by: list[str], summary: Summary) -> pd.DataFrame:
    """Per group of ``by``: ``y`` (mean, or geometric mean of the positive values: 0 when there are
    none), ``low``/``high`` (the 95% t interval over seeds on ``summary``'s scale:
    ``analysis.seeds.bounded_interval``, on the logs for a geometric summary) and ``count``."""
    x = np.log(values["value"].where(values["value"] > 0)) if summary is Summary.GEOMETRIC else values["value"]
    out = values.assign(_x=x).groupby(by, sort=False)["_x"].agg(["mean", "std", "count"]).reset_index()
    half = t_half_width(out["std"], out["count"])
    if summary is Summary.GEOMETRIC:
        out["y"] = np.exp(out["mean"]).where(out["count"] > 0, 0.0)
        out["low"], out["high"] = np.exp(out["mean"] - half), np.exp(out["mean"] + half)
    else:
        out["y"] = out["mean"]
        out["low"], out["high"] = bounded_interval(out["mean"], half, summary)
    return out


def signed_log_axis(ax: plt.Axes, bins: pd.DataFrame) -> None:
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


def integer_ticks(ax: plt.Axes, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def lost_seeds(study: Study) -> pd.DataFrame:
    """The seeds that diverged or collapsed: study, cell, seed, outcome and ``at``, the step at which
    a seed diverged or from which it collapsed."""
    seeds = study.seeds
    lost = seeds[seeds["outcome"] != Outcome.OK]
    at = lost["diverged_at"].where(lost["outcome"] == Outcome.DIVERGED, lost["collapsed_at"])
    return lost[[*KEY, "seed", "outcome"]].assign(at=at.astype(np.int64)).reset_index(drop=True)


def lost_mark(outcome: str, colour: object) -> dict:
    """The matplotlib style of a lost seed's mark in ``colour``: ✕ for a divergence, ⊘ for a collapse."""
    return {**(COLLAPSED_MARK if outcome == Outcome.COLLAPSED else DIVERGED_MARK), "color": colour}


def lost_handles(outcomes: set[str]) -> list[tuple[Line2D, str]]:
    """Legend entries for the lost-seed marks of ``outcomes``, in sorted order of the outcomes."""
    texts = {Outcome.COLLAPSED: COLLAPSED_TEXT, Outcome.DIVERGED: DIVERGED_TEXT}
    return [(Line2D([], [], **lost_mark(o, "0.4")), texts[Outcome(o)]) for o in sorted(outcomes)]
