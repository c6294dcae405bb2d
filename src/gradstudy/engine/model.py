"""The MLP under study: ``depth`` hidden layers of ``width`` units, then a linear softmax layer.

Each hidden layer l computes z_l (the input to the nonlinearity, after batch or layer norm when
the norm sits before it) and h_l = act(z_l). The model exposes both for the statistics:

* ``perturb("z{l}")`` adds a zero probe to z_l, so the gradient with respect to the
  ``perturbations`` collection is dL/dz_l, in the same backward pass as the weight gradients;
* ``sow("intermediates", ...)`` records z_l and h_l when that collection is mutable.

Both are no-ops unless asked for, so a plain training step pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradstudy.cells.options import ACTIVATIONS
from gradstudy.engine.activations import FUNCTIONS, activation_fn

NormFactory = Callable[[bool], nn.Module]


def _batchnorm(cfg: Any) -> NormFactory:
    """Batch statistics in training, running averages at evaluation (Ioffe & Szegedy)."""
    return lambda train: nn.BatchNorm(use_running_average=not train, momentum=cfg.momentum, epsilon=cfg.epsilon)


def _layernorm(cfg: Any) -> NormFactory:
    return lambda train: nn.LayerNorm(epsilon=cfg.epsilon)


#: ``cells.options.NORMS`` name -> builder of a factory ``train -> norm module`` (None: no normalization).
NORM_LAYERS: dict[str, Callable[[Any], NormFactory] | None] = {
    "none": None,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
}


def hidden_name(layer: int) -> str:
    """Parameter-tree name of hidden layer ``layer`` (numbered from 1 at the input)."""
    return f"hidden{layer}"


def slope_name(layer: int) -> str:
    """Parameter-tree name of hidden layer ``layer``'s learned activation slope (PReLU)."""
    return f"slope{layer}"


class LearnedSlope(nn.Module):
    """``act(z, alpha)`` with alpha a parameter: one per layer, or one per unit (``per_unit``)."""

    act: Callable[[jax.Array, jax.Array], jax.Array]
    alpha: float
    per_unit: bool

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        shape = (z.shape[-1],) if self.per_unit else ()
        return self.act(z, self.param("alpha", nn.initializers.constant(self.alpha), shape))


class MLP(nn.Module):
    depth: int
    width: int
    n_classes: int
    act: Callable[[jax.Array], jax.Array]
    make_norm: NormFactory | None = None
    norm_position: str = "before"
    #: A learned-slope activation (``LearnedSlope``) in place of ``act``, built per layer.
    make_slope: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm_before = self.make_norm is not None and self.norm_position == "before"
        norm_after = self.make_norm is not None and self.norm_position == "after"
        h = x
        for layer in range(1, self.depth + 1):
            z = nn.Dense(self.width, name=hidden_name(layer))(h)
            if norm_before:
                z = self.make_norm(train)(z)
            z = self.perturb(f"z{layer}", z)
            h = self.act(z) if self.make_slope is None else self.make_slope(name=slope_name(layer))(z)
            self.sow("intermediates", f"z{layer}", z)
            self.sow("intermediates", f"h{layer}", h)
            if norm_after:
                h = self.make_norm(train)(h)
        return nn.Dense(self.n_classes, name="output")(h)


def block_dense_name(block: int, j: int) -> str:
    """Parameter-tree name of the ``j``-th dense layer of residual block ``block`` (both from 1)."""
    return f"block{block}_dense{j}"


def gain_name(block: int) -> str:
    """Parameter-tree name of residual block ``block``'s learned branch multiplier."""
    return f"branch_gain{block}"


def layer_kernels(tree: Any, layer: int) -> list[Any]:
    """The kernels (or their gradients) of "layer" ``layer`` in a parameter-shaped tree: an MLP's
    hidden layer, or every dense layer of a residual block's branch."""
    if hidden_name(layer) in tree:
        return [tree[hidden_name(layer)]["kernel"]]
    return [tree[name]["kernel"] for j in range(1, 1 + len(tree)) if (name := block_dense_name(layer, j)) in tree]


class BranchGain(nn.Module):
    """A learned scalar multiplying a residual branch (SkipInit, ReZero)."""

    @nn.compact
    def __call__(self, f: jax.Array) -> tuple[jax.Array, jax.Array]:
        gain = self.param("gain", nn.initializers.zeros, ())
        return gain * f, gain


class ResMLP(nn.Module):
    """A dense projection of the input to ``width`` units, then ``depth`` blocks x <- x + a * F(x),
    then a linear softmax layer. F is ``branch_layers`` pre-activation dense layers, each act then
    dense (He et al. 2016's identity-mapping order); ``norm_position`` ``pre`` puts the norm before
    each activation inside the branch, ``post`` on the stream after the addition. ``branch_scale``
    sets a: 1, 1/sqrt(depth), or a learned scalar per block (``skipinit``, ``rezero``).

    For the statistics, block l is "layer" l: z_l and h_l are the stream x_l after it (perturbed,
    so dL/dz_l is delta at the stream), and the branch a * F(x_{l-1}), the incoming stream x_{l-1}
    and a are recorded as ``branch{l}``, ``stream_in{l}`` and ``gain{l}``."""

    depth: int
    width: int
    n_classes: int
    act: Callable[[jax.Array], jax.Array]
    branch_layers: int = 2
    make_norm: NormFactory | None = None
    norm_position: str = "pre"
    branch_scale: str = "one"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pre = self.make_norm is not None and self.norm_position == "pre"
        post = self.make_norm is not None and self.norm_position == "post"
        stream = nn.Dense(self.width, name="input")(x)
        for block in range(1, self.depth + 1):
            f = stream
            for j in range(1, self.branch_layers + 1):
                if pre:
                    f = self.make_norm(train)(f)
                f = nn.Dense(self.width, name=block_dense_name(block, j))(self.act(f))
            if self.branch_scale in ("skipinit", "rezero"):
                f, gain = BranchGain(name=gain_name(block))(f)
            else:
                gain = jnp.asarray(1.0 if self.branch_scale == "one" else self.depth**-0.5, f.dtype)
                f = f * gain
            self.sow("intermediates", f"stream_in{block}", stream)
            self.sow("intermediates", f"branch{block}", f)
            self.sow("intermediates", f"gain{block}", gain)
            stream = stream + f
            if post:
                stream = self.make_norm(train)(stream)
            stream = self.perturb(f"z{block}", stream)
            self.sow("intermediates", f"z{block}", stream)
            self.sow("intermediates", f"h{block}", stream)
        return nn.Dense(self.n_classes, name="output")(stream)


def build_model(cfg: Any, n_classes: int) -> MLP | ResMLP:
    """The model described by a resolved run config (``model``, ``act``, ``norm`` nodes). Its initial
    values come from ``gradstudy.inputs.inits.initial_variables``, not from Flax's initializers."""
    make_norm = None if NORM_LAYERS[cfg.norm.name] is None else NORM_LAYERS[cfg.norm.name](cfg.norm)
    if cfg.model.get("name", "mlp") == "resmlp":
        return ResMLP(
            depth=cfg.model.depth,
            width=cfg.model.width,
            n_classes=n_classes,
            act=activation_fn(cfg.act.name, cfg.act.alpha),
            branch_layers=cfg.model.branch_layers,
            make_norm=make_norm,
            norm_position=cfg.model.norm_position or "pre",
            branch_scale=cfg.model.branch_scale,
        )
    act = ACTIVATIONS[cfg.act.name]
    make_slope = None
    if act.learned_alpha:
        make_slope = partial(LearnedSlope, FUNCTIONS[cfg.act.name], act.alpha(cfg.act.alpha), cfg.act.per_unit)
    return MLP(
        depth=cfg.model.depth,
        width=cfg.model.width,
        n_classes=n_classes,
        act=activation_fn(cfg.act.name, cfg.act.alpha),
        make_norm=make_norm,
        norm_position=cfg.norm.position,
        make_slope=make_slope,
    )


def initial_constants(cfg: Any) -> dict[str, float]:
    """The starting values of the model's variables that are neither dense nor normalization
    layers' (``inputs.inits.initial_variables``): a learned slope starts at ``act.alpha``; a learned
    branch multiplier at ``model.branch_init``, or at 1 under ``init=fixup`` (Fixup's multiplier)."""
    act = ACTIVATIONS[cfg.act.name]
    constants = {"alpha": act.alpha(cfg.act.alpha)} if act.learned_alpha else {}
    if cfg.model.get("name", "mlp") == "resmlp":
        constants["gain"] = 1.0 if cfg.init.name == "fixup" else float(cfg.model.branch_init)
    return constants
