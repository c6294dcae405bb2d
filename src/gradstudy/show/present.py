"""Numbers and tables as text: one way to write a number, an interval and a markdown table.

The report, the reproduction reports and the paper modules all write through these, so a value
reads the same everywhere and every table cell is escaped the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: How a magnitude that is exactly 0 (float32 underflow or a dead layer) shows in a table.
ZERO_MAGNITUDE = "0 (below float32 range or exactly zero)"


def number(value: object, spec: str = ".4g") -> str:
    """A number as text: ``–`` for NaN or missing, ``∞``/``-∞`` for infinities, else ``format(value, spec)``."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return format(float(value), spec)
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval; ``format(interval, ".3f")`` gives ``0.912 [0.905, 0.919]``."""

    estimate: float
    low: float
    high: float

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        if all(math.isnan(v) for v in (self.low, self.high)):
            return number(self.estimate, spec)
        return f"{number(self.estimate, spec)} [{number(self.low, spec)}, {number(self.high, spec)}]"

    def __str__(self) -> str:
        return format(self)


def escape(text: object) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell_text(value: object, column: str) -> str:
    if isinstance(value, float | np.floating) and value == 0 and column.endswith("_gmean"):
        return ZERO_MAGNITUDE
    return escape(number(value))


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, index: bool = False) -> str:
    """``frame`` as a markdown table: the given ``columns`` that it has (all by default), with the
    index as a first, unnamed column when ``index``. Numbers go through ``number``; a ``*_gmean``
    of exactly 0 reads ``ZERO_MAGNITUDE``."""
    shown = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    names = [escape(c) for c in shown.columns]
    if index:
        names = ["", *names]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for label, row in zip(shown.index, shown.itertuples(index=False), strict=True):
        cells = [_cell_text(v, str(c)) for c, v in zip(shown.columns, row, strict=True)]
        lines.append("| " + " | ".join([escape(label), *cells] if index else cells) + " |")
    return "\n".join(lines) + "\n"


def value_text(value: object) -> str:
    """A key's value as a label: whole floats without ``.0``, other floats in ``g`` format, a missing
    value (a key that is null in this cell: ``optim.clip_norm``) as ``null``."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "null"
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else f"{value:g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def label_of(row: pd.Series, keys: Sequence[str], named: bool) -> str:
    """The label of ``row`` for ``keys``: ``v`` for one key (the legend title names it), else ``k=v, …``."""
    if not keys:
        return ""
    if len(keys) == 1 and not named:
        return value_text(row[keys[0]])
    return ", ".join(f"{k}={value_text(row[k])}" for k in keys)
