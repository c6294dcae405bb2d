"""The squared singular values of every layer's input-output Jacobian J_l = dh_l/dx, for one run on
a fixed set of examples (``cells.spectrum`` says what is measured and by which method)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradstudy.cells.spectrum import EXACT, POWER_ITERATIONS, PROBES, SPECTRUM_BINS
from gradstudy.engine.model import Model
from gradstudy.engine.stats import histogram
from gradstudy.engine.step import TrainState

#: The fixed seed of the Hutchinson probes: every run and cell of a shape uses the same directions.
PROBE_SEED = 0x5BEC


def _hidden_of(model: Model, variables: dict[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """x (one example's features) -> every hidden layer's h_l, flattened: (depth, units)."""

    def hidden(x: jax.Array) -> jax.Array:
        _, updates = model.apply(variables, x[None], train=False, mutable=["intermediates"])
        hs = updates["intermediates"]["h"][0]
        return hs.reshape(hs.shape[0], -1)

    return hidden


def _moments(sv2: jax.Array) -> jax.Array:
    """(mean, variance, max) of squared singular values, pooled over every axis but the first (layers)."""
    flat = sv2.reshape(sv2.shape[0], -1)
    return jnp.stack([flat.mean(axis=1), flat.var(axis=1), flat.max(axis=1)], axis=1)


def exact_spectrum(model: Model, n_inputs: int) -> Callable[[TrainState, jax.Array], tuple[jax.Array, jax.Array]]:
    """``(state, x) ->`` (moments (depth, 3), counts (depth, bins + regions)) of one run on the examples
    x: J_l by forward mode along each of the ``n_inputs`` input directions, then the eigenvalues of
    the smaller of J_l J_l^T and J_l^T J_l."""
    directions = jnp.eye(n_inputs, dtype=jnp.float32)

    def run_spectrum(state: TrainState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = _hidden_of(model, {"params": state.params, "batch_stats": state.batch_stats})

        def one_example(example: jax.Array) -> jax.Array:
            columns = jax.vmap(lambda d: jax.jvp(hidden, (example,), (d,))[1])(directions)  # (n, depth, units)
            units = columns.shape[2]
            pattern = "nlu,nlv->luv" if units <= n_inputs else "nlu,mlu->lnm"
            eig = jnp.linalg.eigvalsh(jnp.einsum(pattern, columns, columns))  # (depth, r)
            # below r * eps of the largest, an eigenvalue of a float32 Gram matrix is round-off: 0
            # (a ReLU net's dead units make J rank-deficient)
            floor = eig.shape[1] * jnp.finfo(eig.dtype).eps * eig.max(axis=1, keepdims=True)
            return jnp.where(eig > floor, eig, 0)

        sv2 = jax.lax.map(one_example, x)  # (examples, depth, r)
        per_layer = jnp.moveaxis(sv2, 1, 0)
        return _moments(per_layer), jax.vmap(lambda v: histogram(v, SPECTRUM_BINS))(per_layer)

    return run_spectrum


def hutchinson_spectrum(
    model: Model, n_inputs: int, n_examples: int
) -> Callable[[TrainState, jax.Array], tuple[jax.Array, jax.Array]]:
    """``(state, x) ->`` moments (depth, 3) and empty counts of one run on the ``n_examples`` examples
    x, estimated along ``PROBES`` fixed Gaussian directions v per example (each its own, so that
    their errors average out over the examples): the mean E|J_l v|^2 / r at every layer, and at the
    last layer the variance from E|J^T J v|^2 / r and the maximum by power iteration; NaN where
    there is no estimate."""
    rng = np.random.default_rng(PROBE_SEED)
    directions = jnp.asarray(rng.standard_normal((n_examples, PROBES, n_inputs)), jnp.float32)

    def run_spectrum(state: TrainState, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = _hidden_of(model, {"params": state.params, "batch_stats": state.batch_stats})

        def one_example(inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            example, probes = inputs
            tangents = jax.vmap(lambda d: jax.jvp(hidden, (example,), (d,))[1])(probes)  # (k, depth, units)
            r = min(n_inputs, tangents.shape[2])
            mean = jnp.mean(jnp.sum(tangents**2, axis=2), axis=0) / r
            _, pull_back = jax.vjp(lambda e: hidden(e)[-1], example)
            gram = jax.vmap(lambda t: pull_back(t)[0])(tangents[:, -1])  # J^T J v
            second = jnp.mean(jnp.sum(gram**2, axis=1)) / r

            def power(_, v: jax.Array) -> jax.Array:
                w = pull_back(jax.jvp(lambda e: hidden(e)[-1], (example,), (v,))[1])[0]
                return w / jnp.linalg.norm(w)

            top = jax.lax.fori_loop(0, POWER_ITERATIONS, power, probes[0] / jnp.linalg.norm(probes[0]))
            largest = jnp.sum(jax.jvp(lambda e: hidden(e)[-1], (example,), (top,))[1] ** 2)
            last = jnp.stack([second, largest])
            return mean, last

        means, last = jax.lax.map(one_example, (x, directions))  # (examples, depth), (examples, 2)
        mean = means.mean(axis=0)
        nan = jnp.full(mean.shape[:1] + (2,), jnp.nan, mean.dtype)
        moments = jnp.concatenate([mean[:, None], nan], axis=1)
        # pooled over the examples: the mean of their second moments less the square of the pooled mean
        moments = moments.at[-1, 1].set(last[:, 0].mean() - mean[-1] ** 2).at[-1, 2].set(last[:, 1].max())
        return moments, jnp.zeros((mean.shape[0], 0), jnp.int32)

    return run_spectrum


def spectrum_program(
    model: Model, method: str, n_inputs: int, n_examples: int
) -> Callable[[TrainState, jax.Array], tuple]:
    """The spectrum of one run on ``n_examples`` examples by ``method`` (``cells.spectrum``)."""
    if method == EXACT:
        return exact_spectrum(model, n_inputs)
    return hutchinson_spectrum(model, n_inputs, n_examples)
