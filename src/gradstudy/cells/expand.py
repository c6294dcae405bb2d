"""A sweep's cells from its override strings: each swept key crossed with the others, as Hydra's basic
sweeper does, except the keys named to be zipped, whose values pair up element by element.

The sweeper (``hydra.sweeper.zip=[act,init]``) and the Python API (``gradstudy.sweep(..., zip=...)``)
expand a sweep here, so a grid means the same cells from the shell and from a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


def zip_cells(overrides: Sequence[Override], keys: Sequence[str]) -> list[list[str]]:
    """The cells of ``overrides`` with the sweeps of ``keys`` paired element by element (the i-th
    value of each) and crossed with the other overrides. Raises ``ValueError`` naming a key that is
    not given or a number of values that differs."""
    by_key = {o.key_or_group: o for o in overrides}
    absent = [k for k in keys if k not in by_key]
    if absent:
        raise ValueError(f"zip: {', '.join(absent)} not among the overrides; zip pairs the values of given keys")
    values = {}
    for key in keys:
        override = by_key[key]
        element = override.get_key_element()
        if override.is_sweep_override():
            values[key] = [f"{element}={v}" for v in override.sweep_string_iterator()]
        else:
            values[key] = [f"{element}={override.get_value_element_as_str()}"]
    lengths = {key: len(v) for key, v in values.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"zip: the zipped keys need as many values each ({counts})")
    (crossed,) = BasicSweeper.split_arguments([o for o in overrides if o.key_or_group not in keys], None)
    return [[*cell, *pair] for cell in crossed for pair in zip(*values.values(), strict=True)]


def expand(overrides: Sequence[str | Override], zip_keys: Sequence[str] = ()) -> list[list[str]]:
    """Each cell's override strings: sweeps crossed (``init=xavier,he act=relu,elu`` is four cells),
    except ``zip_keys``, which pair up (``zip_cells``)."""
    parsed = [o for o in overrides if isinstance(o, Override)]
    strings = [o for o in overrides if not isinstance(o, Override)]
    parsed += OverridesParser.create().parse_overrides(strings) if strings else []
    if zip_keys:
        return zip_cells(parsed, zip_keys)
    (cells,) = BasicSweeper.split_arguments(parsed, None)
    return cells
