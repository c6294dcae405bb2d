"""Loss and accuracy of one run on the full train and test sets, at a fixed shape per run.

The sets are cut once into blocks of ``EVAL_BLOCK`` examples (the last one padded with zero
weight) and put on the device once; a run sums its per-example losses and hits block after block
(``lax.scan``), so the order of every sum is fixed whatever the number of runs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradstudy.engine.model import Model
from gradstudy.engine.step import TrainState

#: Evaluation runs over blocks of this many examples (the last one padded with zero weight).
EVAL_BLOCK = 1000
#: The evaluation sets, in the order of the metrics a run returns (loss and accuracy of each).
SPLITS = ("train", "test")

EvalSets = dict[str, tuple[Any, Any, Any]]


def eval_blocks(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``, ``y`` cut into blocks of ``EVAL_BLOCK`` examples, the last one padded with zero weight:
    (n_blocks, EVAL_BLOCK, ...) arrays and the (n_blocks, EVAL_BLOCK) weights."""
    n = len(y)
    pad = -n % EVAL_BLOCK
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.pad(x, ((0, pad), (0, 0)))
    y = np.pad(y, (0, pad))
    blocks = (n + pad) // EVAL_BLOCK
    return x.reshape(blocks, EVAL_BLOCK, -1), y.reshape(blocks, EVAL_BLOCK), weight.reshape(blocks, EVAL_BLOCK)


def eval_sets(dataset: Any) -> EvalSets:
    """The blocks of every split of ``dataset``, in ``SPLITS`` order."""
    return {
        "train": eval_blocks(dataset.x_train, dataset.y_train),
        "test": eval_blocks(dataset.x_test, dataset.y_test),
    }


def set_sizes(dataset: Any) -> np.ndarray:
    """The divisor of each summed metric: every split's size, twice (loss, accuracy)."""
    return np.repeat([len(dataset.y_train), len(dataset.y_test)], 2).astype(np.float64)


def evaluate_run(model: Model, state: TrainState, sets: EvalSets) -> jax.Array:
    """Summed loss and number correct of one run on each split, block after block: (4,)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def block(totals, xyw):
        x, y, weight = xyw
        logits = model.apply(variables, x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(loss.dtype)
        counted = weight > 0
        sums = jnp.stack([jnp.sum(jnp.where(counted, loss, 0)), jnp.sum(jnp.where(counted, correct, 0))])
        return totals + sums, None

    out = []
    for split in SPLITS:
        x, y, weight = sets[split]
        totals, _ = jax.lax.scan(block, jnp.zeros(2, x.dtype), (x, y, weight))
        out.append(totals)
    return jnp.concatenate(out)
