"""How a figure shows a study: which keys become colour, line style, panel columns and panel rows;
one value-to-colour mapping per figure; panels wrapped into lines and lines split into pages.

A key is a config key of ``Study.cells`` (``optim.lr``, ``act``, ``arm``…), ``study`` when several
studies are loaded, or a figure's own key such as ``layer``. Every key that varies is shown
somewhere, so two cells are never averaged into one line: a key the user did not place joins the
colour label when no colour was chosen, otherwise the panel columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Colormap, ListedColormap, LogNorm, Normalize
from matplotlib.lines import Line2D

from gradstudy.schema import CELL_INFO
from gradstudy.store.study import Study

#: Keys that become panels first when several keys vary (the rest share a panel, told apart by colour).
FACET_PREFERENCE = ("arm", "act", "norm", "data", "init", "optim", "study")
#: Past this many categorical values a default colour key becomes panels; numeric keys get a colour bar.
MAX_HUES = 12
#: Panels per line before wrapping.
WRAP = 4
#: One panel, in inches.
PANEL_SIZE = (3.6, 2.6)
#: The figure's limit in inches at ``DPI``: 2,400 x 2,400 pixels.
MAX_INCHES = 20.0
DPI = 120
#: Inches taken by the title and the notes above and below the panels.
TITLE_INCHES = 1.0
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = (None, "o", "s", "^", "D", "v")

Keys = str | Sequence[str] | None


def _as_keys(keys: Keys) -> tuple[str, ...] | None:
    if keys is None:
        return None
    return (keys,) if isinstance(keys, str) else tuple(keys)


@dataclass(frozen=True)
class Encoding:
    """Keys per channel: ``hue`` (colour), ``style`` (line style), ``col`` and ``row`` (panels)."""

    hue: tuple[str, ...] = ()
    style: tuple[str, ...] = ()
    col: tuple[str, ...] = ()
    row: tuple[str, ...] = ()
    wrap: int = WRAP

    def describe(self) -> str:
        parts = [
            f"{name}={'+'.join(keys)}"
            for name, keys in (("hue", self.hue), ("style", self.style), ("col", self.col), ("row", self.row))
            if keys
        ]
        return ", ".join(parts) or "one panel, one line"


def study_keys(study: Study) -> list[str]:
    """The keys that tell the study's cells apart: ``study`` when several are loaded, then the
    varying config keys (an arm standing for the choices it makes: ``Study.label_keys``)."""
    keys = study.label_keys
    return ["study", *keys] if study.cells["study"].nunique() > 1 else keys


def _is_numeric(values: pd.Series) -> bool:
    values = values.dropna()
    return len(values) > 0 and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def encode(
    study: Study,
    data: pd.DataFrame,
    hue: Keys = None,
    style: Keys = None,
    col: Keys = None,
    row: Keys = None,
    wrap: int = WRAP,
    own_keys: Sequence[str] = (),
    own_hue: str | None = None,
    lines: bool = True,
) -> Encoding:
    """Choose the encoding of a figure of ``study`` whose rows are ``data``.

    ``own_keys`` are the figure's keys beside the config keys (``layer``); ``own_hue`` is the key a
    per-cell figure colours by when the user says nothing (``layer``: then each cell gets its own
    panel). ``lines=False`` (a heat map) allows panels only. Raises ``ValueError`` naming a bad key
    and the valid ones.
    """
    given = {"hue": _as_keys(hue), "style": _as_keys(style), "col": _as_keys(col), "row": _as_keys(row)}
    valid = [c for c in study.cells.columns if c == "study" or c not in CELL_INFO]
    valid += [k for k in own_keys if k not in valid]
    for channel, keys in given.items():
        for key in keys or ():
            if key not in valid:
                raise ValueError(f"{channel}={key!r} is not a key of this figure; valid keys: {', '.join(valid)}")
        if not lines and channel in ("hue", "style") and keys:
            raise ValueError(
                f"this figure colours by value and draws no lines: choose panels with col= and row=, not {channel}="
            )
    if wrap < 1:
        raise ValueError(f"wrap={wrap} must be at least 1")
    placed = {k for keys in given.values() for k in keys or ()}
    rest = [k for k in study_keys(study) if k not in placed]
    rest += [k for k in own_keys if k not in placed and k != own_hue and data[k].nunique() > 1]
    chosen = {name: list(keys or ()) for name, keys in given.items()}
    hue_free = given["hue"] is None and lines
    if own_hue is not None and hue_free:
        chosen["hue"], hue_free = [own_hue], False
    elif own_hue is not None and own_hue not in placed and data[own_hue].nunique() > 1:
        rest.append(own_hue)
    config_rest = [k for k in rest if k in study.cells.columns]
    if all(keys is None for keys in given.values()) and len(config_rest) >= 2:
        numeric = {k for k in config_rest if _is_numeric(study.cells[k])}
        facet = next((k for k in FACET_PREFERENCE if k in config_rest), None) or next(
            (k for k in config_rest if k not in numeric), config_rest[0]
        )
        # a figure that compares cells puts the facet key in columns and colours the rest; a per-cell
        # figure (one panel per cell) gives each facet value its own row of panels when the row has
        # at least two of them
        per_cell = own_hue is not None or not lines
        cells = study.cells.drop_duplicates(["study", "cell"])
        if not per_cell or len(cells) >= 2 * cells[facet].nunique():
            chosen["row" if per_cell else "col"], rest = [facet], [k for k in rest if k != facet]
    if hue_free:
        chosen["hue"], rest = rest, []
        key = chosen["hue"][0] if len(chosen["hue"]) == 1 else None
        if given["col"] is None and key in data and not _is_numeric(data[key]) and data[key].nunique() > MAX_HUES:
            chosen["hue"], rest = [], [key]
    chosen["col"] = [*chosen["col"], *rest]
    return Encoding(*(tuple(chosen[name]) for name in ("hue", "style", "col", "row")), wrap=wrap)


@dataclass
class Colours:
    """The one value-to-colour mapping of a figure: ordered levels, their colours, and for numeric
    keys the norm of a sequential colour map (drawn as a colour bar past ``MAX_HUES`` levels)."""

    title: str
    levels: list[str]
    colours: dict[str, tuple[float, float, float, float]]
    norm: Normalize | None = None
    cmap: Colormap | None = None

    @property
    def colour_bar(self) -> bool:
        return self.norm is not None and len(self.levels) > MAX_HUES

    def __getitem__(self, level: str) -> tuple[float, float, float, float]:
        return self.colours[level]


SEQUENTIAL = "viridis"
#: The colour of a null value (``optim.clip_norm=null``) on a sequential map, which has none for it.
NULL_COLOUR = (0.55, 0.55, 0.55, 1.0)


def colours_for(frame: pd.DataFrame, keys: Sequence[str], label_column: str) -> Colours:
    """One colour per level of ``label_column`` in ``frame`` (``keys`` made it). A single numeric key
    gets a sequential map (log-spaced when its positive values span a decade or more; null in grey);
    anything else gets a qualitative palette with as many distinct colours as levels."""
    title = ", ".join(keys)
    if not keys:
        return Colours(title, [""], {"": plt.get_cmap("tab10")(0)})
    if len(keys) == 1 and _is_numeric(frame[keys[0]]):
        values = frame[[keys[0], label_column]].drop_duplicates().sort_values(keys[0])
        numbers = values[keys[0]].astype(float)
        low, high = float(numbers.min()), float(numbers.max())
        if low > 0 and high / low >= 10:
            norm: Normalize = LogNorm(low, high)
        else:
            norm = Normalize(low, high if high > low else low + 1)
        cmap = ListedColormap(plt.get_cmap(SEQUENTIAL)(np.linspace(0, 0.9, 256)))  # no pale yellow end
        colours = {
            lab: NULL_COLOUR if np.isnan(v) else cmap(float(norm(v)))
            for v, lab in zip(numbers, values[label_column], strict=True)
        }
        return Colours(title, list(values[label_column]), colours, norm, cmap)
    levels = list(dict.fromkeys(frame[label_column]))
    n = len(levels)
    palette = (
        plt.get_cmap("tab10").colors
        if n <= 10
        else plt.get_cmap("tab20").colors
        if n <= 20
        else [plt.get_cmap("hsv")(i / n) for i in range(n)]
    )
    return Colours(
        title,
        levels,
        {lab: tuple(palette[i]) + (1.0,) if len(palette[i]) == 3 else palette[i] for i, lab in enumerate(levels)},
    )


def styles_for(levels: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """(line style, marker) per level: four line styles, then markers."""
    return {
        lab: (LINESTYLES[i % len(LINESTYLES)], MARKERS[(i // len(LINESTYLES)) % len(MARKERS)])
        for i, lab in enumerate(levels)
    }


@dataclass(frozen=True)
class Panel:
    """One panel: its row and column labels (empty when not faceted) and its measure."""

    row: str
    col: str
    measure: str

    @property
    def title(self) -> str:
        return "\n".join(t for t in (self.row, self.col) if t)


@dataclass
class Layout:
    """Pages of grid lines of panels (``None`` where a line is shorter than the widest)."""

    pages: list[list[list[Panel | None]]] = field(default_factory=list)

    def figures(self, title: str, legend_inches: float) -> list[tuple[plt.Figure, dict[Panel, plt.Axes]]]:
        """One figure per page, with an axes per panel (unused grid places hidden)."""
        out = []
        for number, page in enumerate(self.pages, start=1):
            n_cols = max(len(line) for line in page)
            width, height = PANEL_SIZE[0] * n_cols + legend_inches, PANEL_SIZE[1] * len(page) + TITLE_INCHES
            fig, axes = plt.subplots(
                len(page),
                n_cols,
                figsize=(min(width, MAX_INCHES), min(height, MAX_INCHES)),
                squeeze=False,
                layout="constrained",
                dpi=DPI,
            )
            panels = {}
            for i, line in enumerate(page):
                for j in range(n_cols):
                    panel = line[j] if j < len(line) else None
                    if panel is None:
                        axes[i, j].set_axis_off()
                    else:
                        panels[panel] = axes[i, j]
            suffix = f" (page {number} of {len(self.pages)})" if len(self.pages) > 1 else ""
            fig.suptitle(title + suffix)
            out.append((fig, panels))
        return out


def layout(rows: Sequence[str], cols: Sequence[str], measures: Sequence[str], wrap: int) -> Layout:
    """Each row level starts a new line; its column levels wrap at ``wrap`` panels; each line of
    panels repeats once per measure. Lines go onto pages of at most ``MAX_INCHES`` in height,
    never splitting one line's measures apart."""
    max_lines = max(1, math.floor((MAX_INCHES - TITLE_INCHES) / PANEL_SIZE[1]))
    blocks = []
    for r in rows or [""]:
        levels = list(cols) or [""]
        for start in range(0, len(levels), wrap):
            chunk = levels[start : start + wrap]
            blocks.append([[Panel(r, c, m) for c in chunk] for m in measures])
    pages: list[list[list[Panel | None]]] = []
    for block in blocks:
        if pages and len(pages[-1]) + len(block) <= max_lines:
            pages[-1].extend(block)
        else:
            pages.append(list(block))
    if pages and any(len(page) > max_lines for page in pages):  # one block taller than a page: split it
        pages = [page[i : i + max_lines] for page in pages for i in range(0, len(page), max_lines)]
    return Layout(pages)


def legend_inches(colours: Colours | None, styles: Sequence[str] = (), extra: Sequence[str] = ()) -> float:
    """Room for the figure legend (or colour bar) to the right of the panels."""
    if colours is not None and colours.colour_bar:
        return 1.2
    labels = [*(colours.levels if colours else ()), *styles, *extra, colours.title if colours else ""]
    lines = [line for text in labels for line in str(text).split("\n")]
    return 0.8 + 0.075 * max(len(t) for t in lines) if any(lines) else 0.0


def fit_legend(fig: plt.Figure, inches: float) -> None:
    """Set the width of ``fig`` to its panels plus ``inches`` for the legend, once the legend's
    entries are known (room made for marks that were never drawn would be blank)."""
    n_cols = fig.axes[0].get_gridspec().ncols if fig.axes else 1
    fig.set_figwidth(min(PANEL_SIZE[0] * n_cols + inches, MAX_INCHES))


def add_legend(
    fig: plt.Figure,
    axes: Sequence[plt.Axes],
    colours: Colours | None,
    styles: dict[str, tuple[str, str | None]],
    style_title: str,
    extra: Sequence[tuple[Line2D, str]] = (),
) -> None:
    """One legend outside the panels with unique entries: the colour levels in order (or a colour bar
    for a numeric key with many levels), the line styles, then ``extra`` marker explanations."""
    handles: list[Line2D] = []
    labels: list[str] = []
    if colours is not None and colours.title and not colours.colour_bar:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(colours.title)
        for level in colours.levels:
            handles.append(Line2D([], [], color=colours[level], linewidth=2))
            labels.append(level)
    if styles and len(styles) > 1:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(style_title)
        for level, (linestyle, marker) in styles.items():
            handles.append(Line2D([], [], color="0.3", linestyle=linestyle, marker=marker))
            labels.append(level)
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    if colours is not None and colours.colour_bar:
        mappable = plt.cm.ScalarMappable(norm=colours.norm, cmap=colours.cmap)
        fig.colorbar(mappable, ax=list(axes), label=colours.title, shrink=0.8)
    if handles:
        fig.legend(
            handles, labels, loc="outside right center", frameon=False, fontsize=8, ncols=2 if len(handles) > 40 else 1
        )
