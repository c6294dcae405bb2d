"""Memory preflight: refuse a cell that cannot fit before anything is allocated for it.

The need is XLA's own analysis of each compiled program of the cell (``memory_analysis`` of
``jit(...).lower(abstract shapes).compile()``: arguments + outputs + temporaries - aliased bytes,
per device), for the largest program, times the number of devices that share the memory (host
devices share RAM), plus the dataset already on the device. It is compared with what is available:
``MemAvailable`` on CPU, the device's free memory on an accelerator. Compiling for the analysis
fills the persistent compile cache, so the real run does not compile again; a cell whose rough
size is far below what is available skips the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

from gradstudy.cells.spectrum import spectrum_bytes
from gradstudy.schema import ConfigError

#: Below this fraction of the available memory, the rough size is trusted and XLA is not asked.
ROUGH_FRACTION = 0.05
#: The keys that drive the need, named in the refusal.
DRIVING_KEYS = ("model.width", "model.depth", "train.seeds", "train.batch_size", "train.eval_every")
GIB = 2**30


class OutOfMemory(ConfigError):
    """The cell needs more memory than is available; the message names the keys that drive the need."""


@dataclass(frozen=True)
class Need:
    """Bytes a cell needs: its largest program (all devices) and its dataset, and how they were found."""

    program: int
    dataset: int
    largest: str
    exact: bool

    @property
    def total(self) -> int:
        return self.program + self.dataset


def available_bytes(device: jax.Device | None = None) -> int:
    """Free memory: the accelerator's limit minus what is in use, or ``MemAvailable`` on CPU."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _program_bytes(compiled: Any) -> int:
    stats = compiled.memory_analysis()
    if stats is None:
        return 0
    return int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )


def rough_bytes(cfg: Any, n_runs: int, n_inputs: int) -> int:
    """A quick upper-end guess: parameters with gradients and three optimizer slots, plus a dozen
    float32 copies of every layer's activations for the batches of one chunk."""
    widths = [n_inputs, *[cfg.model.width] * cfg.model.depth]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    activations = cfg.train.batch_size * cfg.model.width * cfg.model.depth * 12
    return 4 * n_runs * (5 * params + activations)


def cell_need(engine: Any, cfg: Any, seeds: list[int]) -> Need:
    """XLA's analysis of the cell's training (with its evaluations) and (``stats=full``) histogram programs."""
    state = engine.abstract_state(len(seeds))
    n = len(engine.padded(seeds))
    length = min(cfg.train.eval_every, cfg.train.steps)
    programs = {
        "training chunk": engine._chunk.lower(
            state, 0, True, jax.ShapeDtypeStruct((n, length, cfg.train.batch_size), np.int32), engine.eval_sets
        ),
    }
    if engine.hist_steps:
        programs["hist_counts"] = engine._hist_counts.lower(
            state, jax.ShapeDtypeStruct((n, cfg.train.batch_size), np.int32)
        )
    sizes = {name: _program_bytes(lowered.compile()) for name, lowered in programs.items()}
    largest = max(sizes, key=sizes.get)
    devices = engine._mesh.size if jax.devices()[0].platform == "cpu" else 1
    dataset = sum(x.nbytes for x in jax.tree.leaves(engine.eval_sets)) + engine.x_train.nbytes + engine.y_train.nbytes
    return Need(sizes[largest] * devices, int(dataset), largest, exact=True)


def memory_need(cfg: Any, dataset: Any, n_runs: int) -> Need:
    """XLA's estimate for ``n_runs`` runs of the config ``cfg`` on ``dataset`` (a batched engine sizes its groups with it)."""
    from gradstudy.engine.program import Engine

    return cell_need(Engine(cfg, dataset), cfg, list(range(n_runs)))


def check_spectrum(engine: Any, n_inputs: int, available: int) -> None:
    """Raise ``OutOfMemory`` when one example's Jacobian spectrum (``cells.spectrum``) cannot fit."""
    units = int(np.prod(engine.model.hidden_shape(1)[1:]))
    need = spectrum_bytes(engine.depth, n_inputs, units)
    if need > available:
        raise OutOfMemory(
            f"stats.extra: jacobian_spectrum ({engine.spectrum_method}) needs about {need / GIB:.1f} GiB per example "
            f"(tangents at {engine.depth} layers of {units} units, for {n_inputs} inputs) but {available / GIB:.1f} GiB "
            "are available; lower model.depth or the layer size, or leave jacobian_spectrum out"
        )


def preflight(engine: Any, cfg: Any, seeds: list[int], available: int | None = None) -> Need | None:
    """Raise ``OutOfMemory`` when the cell cannot fit; returns the need when XLA was asked."""
    available = available_bytes() if available is None else available
    n_inputs = int(np.prod(engine.x_train.shape[1:]))
    if engine.spectrum_method is not None:
        check_spectrum(engine, n_inputs, available)
    if rough_bytes(cfg, len(engine.padded(seeds)), n_inputs) < ROUGH_FRACTION * available:
        return None
    need = cell_need(engine, cfg, seeds)
    if need.total > available:
        keys = ", ".join(f"{k}={OmegaConf.select(cfg, k)}" for k in DRIVING_KEYS)
        raise OutOfMemory(
            f"{DRIVING_KEYS[0]}: the cell needs about {need.total / GIB:.1f} GiB ({need.largest} program "
            f"{need.program / GIB:.1f} GiB, dataset {need.dataset / GIB:.2f} GiB) but {available / GIB:.1f} GiB "
            f"are available; the need grows with {keys}. Lower them, or set check_memory=false to try anyway"
        )
    return need
