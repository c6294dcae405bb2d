"""The names every layer shares: the config error, cell states, result files and their columns,
histogram regions, the cell key, and where the configs live.

Nothing here computes anything; it sits below every other module so that the inputs, the engine,
the store, the analysis and the figures agree on these names without importing one another.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class ConfigError(ValueError):
    """A config value that cannot be run; the message names the key and what is allowed."""


def conf_dir() -> str:
    """``conf/`` inside an installed wheel, else the repository's top-level ``conf/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parents[1] / "conf")


class CellStatus(StrEnum):
    """What a cell folder's ``meta.json`` says, as checked against its files (``store.state``)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    #: Files that do not prove themselves: an unreadable ``meta.json``, or a table that is missing
    #: or differs from the size, row count or SHA-256 its ``meta.json`` lists. A rerun redoes it.
    CORRUPT = "corrupt"
    #: Stopped before it finished: by SIGINT/SIGTERM, or ``running`` with no live process holding
    #: its lock (killed, or its machine went away). A rerun redoes it.
    INTERRUPTED = "interrupted"


class Outcome(StrEnum):
    """What became of a seed, and of a complete cell (``store.outcomes``): ``ok`` when a seed trained
    to the end and kept learning; ``diverged`` when it turned non-finite; ``collapsed`` when it
    trained to the end with no gradient left and its loss at chance."""

    OK = "ok"
    DIVERGED = "diverged"
    COLLAPSED = "collapsed"


# ----- the files of a cell folder ---------------------------------------------------------------
META = "meta.json"
CONFIG = "config.yaml"
CURVES = "curves.parquet"
LAYERS = "layers.parquet"
HISTS = "hists.parquet"
SEEDS = "seeds.parquet"
STEPS = "steps.parquet"
UNITS = "units.parquet"
SPECTRA = "spectra.parquet"
#: The key of ``meta.json`` that holds what the theory needs of the cell (``theory.CellInputs``).
THEORY_INPUTS = "theory_inputs"
#: The folder of sweep membership markers inside a results folder.
SWEEPS = ".sweeps"

CURVE_COLUMNS = ["seed", "step", "split", "metric", "value"]
LAYER_COLUMNS = ["seed", "step", "layer", "stat", "value"]
HIST_DTYPES = {
    "seed": "int64",
    "step": "int64",
    "layer": "int64",
    "quantity": "object",
    "region": "object",
    "bin_left": "float64",
    "bin_right": "float64",
    "count": "int64",
}
HIST_COLUMNS = list(HIST_DTYPES)
SEED_COLUMNS = ["seed", "diverged_at", "last_healthy_step"]
STEP_COLUMNS = ["seed", "step", "loss", "lr"]
UNIT_DTYPES = {
    "seed": "int64",
    "step": "int64",
    "layer": "int64",
    "unit": "int64",
    "stat": "object",
    "value": "float64",
}
UNIT_COLUMNS = list(UNIT_DTYPES)
#: ``stats.extra=[jacobian_spectrum]``: moments of the squared singular values of dh_l/dx and the
#: method that gave them (``cells.spectrum``).
SPECTRUM_DTYPES = {
    "seed": "int64",
    "step": "int64",
    "layer": "int64",
    "method": "object",
    "stat": "object",
    "value": "float64",
}
SPECTRUM_COLUMNS = list(SPECTRUM_DTYPES)
TABLE_COLUMNS = {
    CURVES: CURVE_COLUMNS,
    LAYERS: LAYER_COLUMNS,
    HISTS: HIST_COLUMNS,
    SEEDS: SEED_COLUMNS,
    STEPS: STEP_COLUMNS,
    UNITS: UNIT_COLUMNS,
    SPECTRA: SPECTRUM_COLUMNS,
}
#: Split and metric of each column of the engine's evaluations.
EVAL_METRICS = (("train", "loss"), ("train", "accuracy"), ("test", "loss"), ("test", "accuracy"))

#: How many classes each dataset's labels take: a label outside [0, n) is refused, and a loss of
#: ln(n) is a uniform guess (``store.outcomes``).
N_CLASSES = {"mnist5k": 10, "digits": 10, "mnist1d": 10, "shapeset": 9, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}

# ----- histograms ---------------------------------------------------------------------------------
#: Quantities whose per-layer histograms the ``full`` tier records at ``stats.hist_steps``.
HIST_QUANTITIES = ("activation", "delta")
#: Counts stored beside the bins of every histogram: exactly 0, inside the range's lower end,
#: past its upper end, NaN or inf (``cells.statistics.HistBins``).
HIST_REGIONS = ("zero", "below", "above", "nonfinite")


def unit_stat(unit: int, q: int) -> str:
    """How the engine names unit ``unit``'s ``q``-th percentile of z among a layer's statistics
    (``stats.extra=[unit_percentiles]``); the tables writer moves these rows to ``UNITS``."""
    return f"unit{unit}:z_p{q}"


def parse_unit_stat(name: str) -> tuple[int, str] | None:
    """(unit, stat) of a ``unit_stat`` name, or None for any other statistic."""
    head, _, stat = name.partition(":")
    return (int(head[len("unit") :]), stat) if stat and head.startswith("unit") else None


# ----- cells ----------------------------------------------------------------------------------------
#: A cell is identified by its study and its cell id: ``CellKey`` is one such pair, ``KEY`` the
#: columns that hold it in every table.
CellKey = tuple[str, str]
KEY = ["study", "cell"]
#: Config groups whose chosen option name becomes a column of ``Study.cells`` and part of the slug.
GROUPS = ("init", "act", "norm", "data", "optim", "model")
#: The ``+arm=`` choice of a paper preset, kept in ``meta.json`` and as a column of ``Study.cells``.
ARM = "arm"
#: Columns of ``Study.cells`` that describe the cell's run and files, not its config.
CELL_INFO = (
    "study",
    "cell",
    "status",
    "reason",
    "outcome",
    "n_seeds",
    "n_diverged",
    "n_collapsed",
    "code_hash",
    "machine",
    "path",
)
