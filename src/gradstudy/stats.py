"""Per-layer statistics of one training step, pure functions of arrays (computed inside ``jit``).

For hidden layer l (numbered from 1 at the input), on the training minibatch of size B:

* ``grad_norm``: the L2 (Frobenius) norm of dL/dW_l, L being the mean minibatch loss;
* ``delta_std``: the standard deviation over (example, unit) of delta_l = B * dL/dz_l, z_l being the
  input to the nonlinearity. The factor B undoes the 1/B of the mean, so the figure is Glorot &
  Bengio's back-propagated gradient and does not change with batch size;
* ``act_mean``, ``act_std``: mean and standard deviation over (example, unit) of h_l = act(z_l);
* ``saturated_frac``: the fraction of entries of h_l in the activation's flat region (NaN when the
  activation has none);
* ``dead_frac``: the fraction of units with z_l <= 0 on every example of the batch (NaN unless the
  activation has dead units: relu).

Under batch norm every one of these is a batch-level quantity by nature.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from gradstudy.activations import Activation

STAT_NAMES = ("grad_norm", "delta_std", "act_mean", "act_std", "saturated_frac", "dead_frac")

#: Statistics tiers: ``none`` records nothing, ``scalars`` the per-layer scalars above.
TIERS = ("none", "scalars")


def layer_stats(
    kernel_grad: jax.Array, dloss_dz: jax.Array, z: jax.Array, h: jax.Array, act: Activation
) -> jax.Array:
    """The statistics of one hidden layer, in the order of ``STAT_NAMES``.

    ``dloss_dz`` is the gradient of the *mean* minibatch loss with respect to z, shape (B, width).
    """
    batch = z.shape[0]
    nan = jnp.array(jnp.nan, h.dtype)
    saturated = jnp.mean(act.saturated(h)) if act.saturated is not None else nan
    dead = jnp.mean(jnp.all(z <= 0, axis=0)) if act.has_dead_units else nan
    return jnp.stack(
        [
            jnp.sqrt(jnp.sum(jnp.square(kernel_grad))),
            jnp.std(batch * dloss_dz),
            jnp.mean(h),
            jnp.std(h),
            saturated.astype(h.dtype),
            dead.astype(h.dtype),
        ]
    )


def network_stats(
    kernel_grads: Sequence[jax.Array],
    dloss_dzs: Sequence[jax.Array],
    zs: Sequence[jax.Array],
    hs: Sequence[jax.Array],
    act: Activation,
) -> jax.Array:
    """Statistics of every hidden layer: shape (depth, len(STAT_NAMES))."""
    return jnp.stack([layer_stats(g, d, z, h, act) for g, d, z, h in zip(kernel_grads, dloss_dzs, zs, hs, strict=True)])
