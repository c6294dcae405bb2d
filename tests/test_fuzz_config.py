"""A config fuzzer: overrides generated from the schema of every config group (right and wrong
types, boundary and out-of-range numbers, NaN/inf, empty and long lists, unknown keys and options,
odd strings). Each must either validate or be refused before any compile with a message that
names the key, never with another exception (which the command line would show as a traceback).
A bounded subset of the ones that validate then runs as tiny cells, which must complete or fail
saying why. Fixed seed and example count (``derandomize``), so the suite stays within its time."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import TINY, compose_config
from hydra.errors import HydraException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from gradstudy.cells.config import SCHEMA, Config
from gradstudy.cells.validate import validate
from gradstudy.run import run_cells
from gradstudy.schema import ConfigError

#: How many generated overrides are tried (the explicit examples come on top).
EXAMPLES = 150
#: Every key of the schema: ``group.field`` for the groups, the top-level fields themselves.
GROUP_KEYS = [f"{group}.{f.name}" for group, schema in SCHEMA.items() for f in fields(schema)]
TOP_KEYS = [f.name for f in fields(Config) if f.name not in SCHEMA and f.name not in ("budgets", "members")]
#: Options of the groups, the real ones and some that do not exist.
GROUP_OPTIONS = {g: ["bogus", "", "ünï", "relu/../x"] for g in SCHEMA}

ODD_STRINGS = ["", " ", "abc", "ünï", "${nowhere}", "1e999", "nan", "-0", "null", "true", "a" * 300, "x y", "a,b"]
PLAUSIBLE = [0.5, 1, 2, 3, 0.01, 0.9, 1e-3, 8, True, False]
NUMBERS = [0, 1, -1, 2, 7, 64, 2**31, 10**12, 0.0, -0.0, 0.5, 1e-300, 1e300, -1e-9, math.nan, math.inf, -math.inf]


def _text(value: object) -> str:
    """``value`` as Hydra's override grammar writes it; strings quoted, so that every override parses
    (Hydra's own parse errors, which do not name the key, are not what this fuzzes)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value == math.inf else "-inf" if value == -math.inf else repr(value))
        )
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "'" + value.replace("\\", "").replace("'", "") + "'"
    return str(value)


values = st.recursive(
    st.one_of(
        st.sampled_from(NUMBERS),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.sampled_from(ODD_STRINGS),
    ),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=8,
)


@st.composite
def overrides(draw) -> str:
    kind = draw(st.sampled_from(["group_key", "group_key", "plausible", "plausible", "top_key", "option", "unknown"]))
    if kind == "plausible":  # values in range for most numeric keys: the overrides that should run
        key = draw(st.sampled_from(GROUP_KEYS))
        return f"{key}={_text(draw(st.sampled_from(PLAUSIBLE)))}"
    if kind == "option":
        group = draw(st.sampled_from(sorted(GROUP_OPTIONS)))
        return f"{group}={draw(st.sampled_from(GROUP_OPTIONS[group]))}"
    if kind == "unknown":
        key = draw(st.sampled_from([f"+{g}.bogus_key" for g in SCHEMA] + ["+bogus_top", "model.bogus_key"]))
        return f"{key}={_text(draw(values))}"
    key = draw(st.sampled_from(GROUP_KEYS if kind == "group_key" else TOP_KEYS))
    return f"{key}={_text(draw(values))}"


#: The inputs found by hand before the fuzzer (issue #21), pinned as explicit examples.
EXPLICIT = [
    "stats.hist_range=[10,1]",
    "stats.hist_range=[0,1]",
    "stats.hist_range=[1]",
    "check_memory=2",
    "train.seeds=100000",
    f"study={'s' * 300}",
    "study='ünï'",
    "model.depth=0",
    "optim.lr=-1",
    "train.batch_size=100000",
    "init.scale=nan",
    "stats.extra=[]",
    "train.seeds=[]",
]
VALID: list[str] = []
TRIED: list[str] = []


def _named(message: str, override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key in message or key.split(".")[-1] in message


def _fuzz(override: str, results: Path) -> None:
    TRIED.append(override)
    try:
        cfg = compose_config(*TINY, f"results_dir={results}", override)
        validate(cfg)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        assert _named(str(err), override), f"{override}: the message does not name the key: {err}"
        assert not results.exists(), f"{override}: refused, yet something was written"
        return
    VALID.append(override)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(override=overrides())
@pytest.mark.slow
def test_every_generated_override_validates_or_is_refused_naming_its_key(override, tmp_path_factory):
    _fuzz(override, tmp_path_factory.mktemp("fuzz") / "results")


for _explicit in EXPLICIT:  # every input found by hand is tried first, before the generated ones
    test_every_generated_override_validates_or_is_refused_naming_its_key = example(override=_explicit)(
        test_every_generated_override_validates_or_is_refused_naming_its_key
    )


#: Keys whose valid values the tiny runs may take: others (model.width=10**6) are valid but not tiny.
CHEAP = ("init.", "act.", "norm.", "optim.", "stats.hist", "stats.extra", "stats.units", "data.standardize", "study=")


@pytest.mark.slow
def test_a_bounded_subset_of_the_valid_overrides_runs_to_a_recorded_end(tmp_path):
    """The first few cheap overrides that validated run as tiny cells: each ends complete, or failed
    with a message (never an exception out of the run)."""
    if not VALID:
        pytest.skip("run with the fuzzer test, which collects the valid overrides")
    chosen = list(dict.fromkeys(o for o in VALID if o.startswith(CHEAP)))[:6]
    base = [*TINY, "train.steps=10", f"results_dir={tmp_path}", "study=fuzz"]
    cells = [(compose_config(*base, o), None) for o in chosen]
    for override, folder in zip(chosen, run_cells(cells), strict=True):
        meta = json.loads((Path(folder) / "meta.json").read_text())
        assert meta["status"] in ("complete", "failed"), override
        assert meta["status"] == "complete" or meta["message"], override
    print(f"fuzzer: {len(TRIED)} overrides tried, {len(VALID)} valid, {len(chosen)} run: {chosen}")
