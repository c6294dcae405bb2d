"""Inference latency per example of several architectures, timed in one process and interleaved.

Latency does not depend on the trained values, so each architecture runs at its initial parameters
(``inputs.inits.initial_variables``, seed 0) and nothing trained is stored. Each round times every
architecture in turn, ``calls`` jitted forward passes each on the same fixed batch, and keeps the
median; the rounds interleave the architectures so that a slow moment of the machine hits all of
them alike. Only ratios between architectures measured in the same run mean anything: the table
is never read as an absolute speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Defaults: rounds (each a sample of the ratio), timed calls per architecture per round, batch size.
ROUNDS, CALLS, BATCH = 30, 15, 1000


def forward_pass(cfg: Any, x: np.ndarray, n_classes: int) -> Callable[[], None]:
    """One jitted evaluation-mode forward pass of the model ``cfg`` on ``x``, blocking until done."""
    import jax

    from gradstudy.engine.model import build_model, initial_constants
    from gradstudy.inputs.inits import initial_variables

    model = build_model(cfg, n_classes)
    example = np.asarray(x[:1])
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
    variables = initial_variables(cfg.init, shapes, 0, initial_constants(cfg))
    apply = jax.jit(lambda v, inputs: model.apply(v, inputs, train=False))
    inputs = jax.device_put(np.asarray(x))
    variables = jax.device_put(variables)

    def call() -> None:
        apply(variables, inputs).block_until_ready()

    return call


def measure_latency(
    configs: Mapping[str, Any], x: np.ndarray, n_classes: int, rounds: int = ROUNDS, calls: int = CALLS
) -> pd.DataFrame:
    """Seconds per example of each named config's forward pass: one row per (arm, round), the median
    of ``calls`` timed calls, the arms interleaved round by round after one warm-up call each."""
    passes = {name: forward_pass(cfg, x, n_classes) for name, cfg in configs.items()}
    for call in passes.values():
        call()  # compile and first touch
    rows = []
    for round_ in range(rounds):
        for name, call in passes.items():
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            rows.append({"arm": name, "round": round_, "seconds_per_example": float(np.median(times)) / len(x)})
    return pd.DataFrame(rows)
