"""The pure update of one run: loss, gradients, optimizer, and the divergence mask.

``make_step`` returns the step of one run. What a measured step records is passed in as a function
(``measure``, built by ``gradstudy.engine.measure``), so the update itself knows nothing of statistics:
with no ``measure`` the step is a plain forward and backward pass; with one, the same pass carries
a zero probe on every pre-activation z_l and records z_l and h_l, and ``measure`` turns the
gradients, dL/dz_l, z_l and h_l into the step's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradstudy.engine.model import Model


class TrainState(NamedTuple):
    """Training state of a set of runs; every leaf has the runs on its leading axis."""

    params: Any
    batch_stats: Any
    opt_state: Any
    diverged_at: jax.Array  # int32, -1 while the run is finite


class Pass(NamedTuple):
    """One forward and backward pass of one run with a zero probe on every z_l."""

    loss: jax.Array
    x: jax.Array  # the minibatch
    batch_stats: Any
    params: Any  # the parameters the pass ran with (a learned slope is read from them)
    grads: Any
    dzs: (
        jax.Array
    )  # dL/dz_l, stacked over layers: (depth, batch, width), (depth, batch, *positions, channels) for a CNN
    zs: jax.Array  # z_l, shaped as dzs
    hs: jax.Array  # h_l = act(z_l), shaped as dzs
    #: A residual block's own records (``model.ResMLP``), stacked over blocks: branch, stream_in, gain; else empty.
    blocks: dict[str, jax.Array]


#: What a residual block records beside z_l and h_l (``model.ResMLP``), as ``statistics.LayerView`` fields.
BLOCK_RECORDS = ("branch", "stream_in", "gain")
#: ``measure(pass)``: the per-layer statistics of one measured step, (depth, n_stats).
Measure = Callable[[Pass], jax.Array]


def loss_fn(
    model: Model,
    params: Any,
    batch_stats: Any,
    probes: Any,
    x: jax.Array,
    y: jax.Array,
    collect: bool,
    norm_mask: jax.Array | None = None,
):
    """Mean cross-entropy of one minibatch and the mutated collections (batch statistics, and the
    recorded z_l, h_l when ``collect``); ``norm_mask`` as ``model.apply_norm`` takes it."""
    variables = {"params": params, "batch_stats": batch_stats}
    mutable = ["batch_stats", "intermediates"] if collect else ["batch_stats"]
    logits, updates = model.apply(variables, x, train=True, probes=probes, norm_mask=norm_mask, mutable=mutable)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates


def probed_pass(
    model: Model, state: TrainState, x: jax.Array, y: jax.Array, norm_mask: jax.Array | None = None
) -> Pass:
    """The forward and backward pass of one run on (x, y), with dL/dz_l from zero probes."""
    probes = jnp.zeros((model.depth, *model.hidden_shape(x.shape[0])), x.dtype)
    (loss, aux), (grads, dz) = jax.value_and_grad(loss_fn, argnums=(1, 3), has_aux=True)(
        model, state.params, state.batch_stats, probes, x, y, True, norm_mask
    )
    inter = aux["intermediates"]
    return Pass(
        loss=loss,
        x=x,
        batch_stats=aux.get("batch_stats", {}),
        params=state.params,
        grads=grads,
        dzs=dz,
        zs=inter["z"][0],
        hs=inter["h"][0],
        blocks={key: inter[key][0] for key in BLOCK_RECORDS if key in inter},
    )


def all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.array(True)


def apply_update(
    optimizer: optax.GradientTransformation, state: TrainState, step: jax.Array, loss, grads, batch_stats
) -> tuple[TrainState, jax.Array]:
    """The optimizer's update of one run, and whether to keep it: a run whose loss, parameters,
    batch statistics or optimizer state turn non-finite keeps its last finite state (``keep_finite``)
    and records ``step`` as the step it diverged at (already in the returned state)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & all_finite((params, opt_state, batch_stats))
    alive = state.diverged_at < 0
    diverged_at = jnp.where(alive & ~finite, step, state.diverged_at)
    return TrainState(params, batch_stats, opt_state, diverged_at), finite & alive


def keep_finite(old: TrainState, new: TrainState, keep: jax.Array) -> TrainState:
    """A group of runs (every leaf runs-first): each run's ``new`` state where ``keep``, else its ``old``
    parameters, batch statistics and optimizer state (``new`` holds the divergence step either way).

    Outside the vmap over runs and behind a ``cond``: when every run keeps its update (almost every
    step) the new state passes through, and the per-run select sits in the other branch. Written as
    a select inside the step, XLA's CPU compiler takes time quadratic in depth over the selects of
    every parameter on a flag reduced from all of them: 34.6 s against 5.9 s to compile 30 residual
    blocks, 199 s at 60.
    """

    def selected() -> tuple[Any, Any, Any]:
        def pick(n: jax.Array, o: jax.Array) -> jax.Array:
            return jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim)), n, o)

        return jax.tree.map(pick, tuple(new[:3]), tuple(old[:3]))

    kept = jax.lax.cond(jnp.all(keep), lambda: tuple(new[:3]), selected)
    return TrainState(*kept, diverged_at=new.diverged_at)


Step = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array, jax.Array, jax.Array | None]]


def make_step(
    model: Model,
    optimizer: optax.GradientTransformation,
    x_train: jax.Array,
    y_train: jax.Array,
    measure: Measure | None = None,
) -> Step:
    """The update of one run on the minibatch of training rows ``idx``: ``(state, step, idx) ->
    (updated state, keep, loss, statistics)``, the statistics being ``measure``'s (None without one);
    ``keep_finite`` then applies ``keep`` to a group of runs."""

    def plain(state: TrainState, step: jax.Array, idx: jax.Array):
        x, y = x_train[idx], y_train[idx]
        (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            model, state.params, state.batch_stats, None, x, y, False
        )
        return *apply_update(optimizer, state, step, loss, grads, aux.get("batch_stats", {})), loss, None

    def measured(state: TrainState, step: jax.Array, idx: jax.Array):
        probed = probed_pass(model, state, x_train[idx], y_train[idx])
        new, keep = apply_update(optimizer, state, step, probed.loss, probed.grads, probed.batch_stats)
        return new, keep, probed.loss, measure(probed)

    return plain if measure is None else measured
