"""The models under study: the MLP (``depth`` hidden layers of ``width`` units, then a linear softmax
layer) and the residual MLP.

Each hidden layer l computes z_l (the input to the nonlinearity, after batch or layer norm when
the norm sits before it) and h_l = act(z_l). The models expose both for the statistics:

* ``probes``, a (depth, batch, width) array of zeros, is added to the z_l, so its gradient is
  dL/dz_l, in the same backward pass as the weight gradients;
* ``sow("intermediates", ...)`` records z_l and h_l, stacked over layers, when that collection is
  mutable.

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
from gradstudy.inputs.data import IMAGE_LAYOUTS, ImageLayout
from gradstudy.inputs.inits import BLOCKS, CONV, STACK

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


def apply_norm(norm: nn.Module, v: jax.Array, norm_mask: jax.Array | None) -> jax.Array:
    """``norm(v)``; a batch norm with ``norm_mask`` (rows, 1) takes its batch statistics from the
    masked-in rows only and normalizes every row with them (over every position of a feature map too)."""
    if norm_mask is not None and isinstance(norm, nn.BatchNorm):
        return norm(v, mask=norm_mask.reshape(norm_mask.shape[:1] + (1,) * (v.ndim - 1)))
    return norm(v)


def activate(
    owner: nn.Module, z: jax.Array, probe: jax.Array | None, slope: str, train: bool, norm_mask: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A hidden layer after its linear map, called inside ``owner``'s compact method (``owner`` has
    the fields ``act``, ``make_norm``, ``norm_position`` and ``make_slope``, and owns the modules made
    here): the norm when it sits before the activation, the zero ``probe``, the activation (a learned
    slope named ``slope`` when ``make_slope`` is set), the norm when it sits after. Returns z_l,
    h_l = act(z_l) and the next layer's input."""
    norm, position = owner.make_norm, owner.norm_position
    if norm is not None and position == "before":
        z = apply_norm(norm(train), z, norm_mask)
    if probe is not None:
        z = z + probe
    h = owner.act(z) if owner.make_slope is None else owner.make_slope(name=slope)(z)
    if norm is not None and position == "after":
        return z, h, apply_norm(norm(train), h, norm_mask)
    return z, h, h


def hidden_name(layer: int) -> str:
    """Parameter-tree name of hidden layer ``layer`` (numbered from 1 at the input)."""
    return f"hidden{layer}"


def slope_name(layer: int) -> str:
    """Parameter-tree name of hidden layer ``layer``'s learned activation slope (PReLU), or, inside
    a residual net's ``BLOCKS``, of the ``layer``-th branch layer's."""
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
    def __call__(
        self, x: jax.Array, train: bool, probes: jax.Array | None = None, norm_mask: jax.Array | None = None
    ) -> jax.Array:
        h, zs, hs = x, [], []
        for layer in range(1, self.depth + 1):
            z = nn.Dense(self.width, name=hidden_name(layer))(h)
            probe = None if probes is None else probes[layer - 1]
            z, out, h = activate(self, z, probe, slope_name(layer), train, norm_mask)
            zs.append(z)
            hs.append(out)
        if self.is_mutable_collection("intermediates"):
            self.sow("intermediates", "z", jnp.stack(zs))
            self.sow("intermediates", "h", jnp.stack(hs))
        return nn.Dense(self.n_classes, name="output")(h)

    def hidden_shape(self, batch: int) -> tuple[int, ...]:
        """The shape of every hidden layer's z_l and h_l on ``batch`` examples."""
        return (batch, self.width)


def scanned(
    layer: type[nn.Module],
    fields: tuple[Any, ...],
    name: str,
    length: int,
    carry: jax.Array,
    probes: jax.Array | None,
    norm_mask: jax.Array | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``length`` copies of ``layer(*fields)`` applied in turn to ``carry``, each with its own probe,
    as one ``nn.scan`` over their variables stacked on a leading axis under ``name``, ``SCAN_UNROLL``
    per iteration (called inside a compact method); returns the carry and the records stacked."""
    layers = nn.scan(
        layer,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True},
        in_axes=0 if norm_mask is None else (0, nn.broadcast),
        length=length,
        unroll=SCAN_UNROLL,
    )(*fields, name=name)
    return layers(carry, probes) if norm_mask is None else layers(carry, probes, norm_mask)


class ConvLayer(nn.Module):
    """One convolution of a CNN's layers 2..depth (``CNN``): conv, the norm before or after the
    activation, the zero ``probe`` on z, the activation. Returns the next layer's input and z, h."""

    channels: int
    window: tuple[int, ...]
    padding: str
    act: Callable[[jax.Array], jax.Array]
    make_norm: NormFactory | None
    norm_position: str
    train: bool
    make_slope: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(
        self, h: jax.Array, probe: jax.Array | None, norm_mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        z = nn.Conv(self.channels, self.window, padding=self.padding.upper(), name=CONV)(h)
        z, out, after = activate(self, z, probe, slope_name(1), self.train, norm_mask)
        return after, {"z": z, "h": out}


class CNN(nn.Module):
    """A plain convolutional net: ``depth`` convolutions of ``channels`` channels (kernel
    ``kernel`` on every spatial axis, stride 1, ``padding`` same or circular), each followed by the
    norm (before or after the activation, as in the MLP) and the activation, then the mean over
    positions and a softmax layer. ``downsample``: the first convolution has stride 2. Flat input
    rows are folded into ``layout``'s images (a 1-D signal has one spatial axis).

    Hidden layer l is convolution l: z_l and h_l are (batch, *positions, channels), and ``probes``
    (depth, batch, *positions, channels). The first convolution is ``hidden1`` (its input has the
    data's channels); layers 2..depth, all alike, are one ``nn.scan`` over their variables stacked
    under ``STACK`` (kernel (depth - 1, *window, channels, channels)), so that a net of hundreds of
    layers compiles ``SCAN_UNROLL`` of them."""

    depth: int
    channels: int
    n_classes: int
    act: Callable[[jax.Array], jax.Array]
    layout: ImageLayout
    kernel: int = 3
    padding: str = "same"
    downsample: bool = False
    make_norm: NormFactory | None = None
    norm_position: str = "before"
    make_slope: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool, probes: jax.Array | None = None, norm_mask: jax.Array | None = None
    ) -> jax.Array:
        h = x.reshape(x.shape[0], *self.layout.shape)
        if self.layout.channels_first:
            h = jnp.moveaxis(h, 1, -1)
        window = (self.kernel,) * len(self.layout.spatial)
        stride = 2 if self.downsample else 1
        z = nn.Conv(self.channels, window, strides=stride, padding=self.padding.upper(), name=hidden_name(1))(h)
        z, out, h = activate(self, z, None if probes is None else probes[0], slope_name(1), train, norm_mask)
        zs, hs = [z], [out]
        if self.depth > 1:
            fields = (self.channels, window, self.padding, self.act, self.make_norm, self.norm_position, train)
            rest = None if probes is None else probes[1:]
            h, records = scanned(ConvLayer, (*fields, self.make_slope), STACK, self.depth - 1, h, rest, norm_mask)
        if self.is_mutable_collection("intermediates"):
            stacked = {"z": jnp.stack(zs), "h": jnp.stack(hs)}
            if self.depth > 1:
                stacked = {k: jnp.concatenate([v, records[k]]) for k, v in stacked.items()}
            self.sow("intermediates", "z", stacked["z"])
            self.sow("intermediates", "h", stacked["h"])
        return nn.Dense(self.n_classes, name="output")(h.mean(axis=tuple(range(1, h.ndim - 1))))

    def hidden_shape(self, batch: int) -> tuple[int, ...]:
        """The shape of every hidden layer's z_l and h_l on ``batch`` examples."""
        positions = tuple(-(-n // 2) if self.downsample else n for n in self.layout.spatial)
        return (batch, *positions, self.channels)


def block_dense_name(j: int) -> str:
    """Name, inside ``BLOCKS``, of the ``j``-th dense layer (from 1) of every residual branch."""
    return f"dense{j}"


#: Name, inside ``BLOCKS``, of the learned branch multipliers (SkipInit, ReZero).
GAIN = "gain"


def layer_kernels(tree: Any) -> list[jax.Array]:
    """The kernels (or their gradients) of every "layer" of a parameter-shaped tree, in runs of layers
    stacked on a leading axis: an MLP's or a CNN's first hidden layer alone, then the others (same shape);
    a residual net's blocks as one run, each block's branch kernels flattened into one row."""
    if BLOCKS in tree:
        blocks = tree[BLOCKS]
        kernels = [blocks[name]["kernel"] for j in range(1, 1 + len(blocks)) if (name := block_dense_name(j)) in blocks]
        return [jnp.concatenate([k.reshape(k.shape[0], -1) for k in kernels], axis=1)]
    if STACK in tree:  # a CNN: the first convolution, then the stack of the others
        return [tree[hidden_name(1)]["kernel"][None], tree[STACK][CONV]["kernel"]]
    hidden = [tree[hidden_name(k)]["kernel"] for k in range(1, 1 + len(tree)) if hidden_name(k) in tree]
    return [hidden[0][None], *([jnp.stack(hidden[1:])] if len(hidden) > 1 else [])]


def learned_slopes(params: Any, depth: int) -> jax.Array | None:
    """Every layer's learned activation slope (PReLU's alpha) stacked over layers, or None without
    them: an MLP's (depth, ...) and a residual net's (depth, branch_layers, ...), one per branch layer."""
    if BLOCKS in params:
        blocks = params[BLOCKS]
        slopes = [blocks[name]["alpha"] for j in range(1, 1 + len(blocks)) if (name := slope_name(j)) in blocks]
        return jnp.stack(slopes, axis=1) if slopes else None
    if slope_name(1) not in params:
        return None
    first = params[slope_name(1)]["alpha"][None]
    if STACK in params:  # a CNN: layers 2..depth's slopes are stacked
        return jnp.concatenate([first, params[STACK][slope_name(1)]["alpha"]]) if depth > 1 else first
    return jnp.stack([params[slope_name(k)]["alpha"] for k in range(1, depth + 1)])


class BranchGain(nn.Module):
    """A learned scalar multiplying a residual branch (SkipInit, ReZero)."""

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("gain", nn.initializers.zeros, ())


#: Residual blocks per iteration of the scan over them. Each iteration costs XLA's CPU loop a fixed
#: overhead: at width 100 a 5-block net trained in 1.17x the time of the 10-layer MLP with 1 block
#: per iteration and 1.10x with 5 (its arithmetic is 1.06x), while a 100-block chunk still
#: compiles in 5.2 s (3.3 s with 1).
SCAN_UNROLL = 5


class ResidualBlock(nn.Module):
    """One block x <- x + a * F(x) (see ``ResMLP``), with a zero ``probe`` added to the new stream.
    Returns the new stream and the block's records: the stream after it, the branch a * F(x), the
    incoming stream and a."""

    width: int
    act: Callable[[jax.Array], jax.Array]
    branch_layers: int
    make_norm: NormFactory | None
    norm_position: str
    branch_scale: str
    depth: int
    train: bool
    #: A learned-slope activation (``LearnedSlope``) in place of ``act``, one per branch layer.
    make_slope: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(
        self, stream: jax.Array, probe: jax.Array | None, norm_mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        pre = self.make_norm is not None and self.norm_position == "pre"
        f = stream
        for j in range(1, self.branch_layers + 1):
            if pre:
                f = apply_norm(self.make_norm(self.train), f, norm_mask)
            f = self.act(f) if self.make_slope is None else self.make_slope(name=slope_name(j))(f)
            f = nn.Dense(self.width, name=block_dense_name(j))(f)
        if self.branch_scale in ("skipinit", "rezero"):
            gain = BranchGain(name=GAIN)()
        else:
            gain = jnp.asarray(1.0 if self.branch_scale == "one" else self.depth**-0.5, f.dtype)
        f = f * gain
        new = stream + f
        if self.make_norm is not None and self.norm_position == "post":
            new = apply_norm(self.make_norm(self.train), new, norm_mask)
        if probe is not None:
            new = new + probe
        return new, {"z": new, "branch": f, "stream_in": stream, "gain": gain}


class ResMLP(nn.Module):
    """A dense projection of the input to ``width`` units, then ``depth`` blocks x <- x + a * F(x),
    then a linear softmax layer. F is ``branch_layers`` pre-activation dense layers, each act then
    dense (He et al. 2016's identity-mapping order); ``norm_position`` ``pre`` puts the norm before
    each activation inside the branch, ``post`` on the stream after the addition. ``branch_scale``
    sets a: 1, 1/sqrt(depth), or a learned scalar per block (``skipinit``, ``rezero``).

    The blocks are one ``nn.scan`` over their variables stacked on a leading axis (``BLOCKS``):
    XLA compiles ``SCAN_UNROLL`` blocks whatever the depth, and the optimizer, the divergence check and the statistics see a
    handful of stacked arrays rather than ``depth`` copies of each (an unrolled 100-block net took
    over two minutes to compile on 2 cores).

    For the statistics, block l is "layer" l: z_l and h_l are the stream x_l after it (``probes``
    are added to it, so their gradient is delta at the stream), and the branch a * F(x_{l-1}), the
    incoming stream x_{l-1} and a are recorded as ``branch``, ``stream_in`` and ``gain``, each
    stacked over blocks."""

    depth: int
    width: int
    n_classes: int
    act: Callable[[jax.Array], jax.Array]
    branch_layers: int = 2
    make_norm: NormFactory | None = None
    norm_position: str = "pre"
    branch_scale: str = "one"
    make_slope: Callable[..., nn.Module] | None = None

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool, probes: jax.Array | None = None, norm_mask: jax.Array | None = None
    ) -> jax.Array:
        stream = nn.Dense(self.width, name="input")(x)
        fields = (self.width, self.act, self.branch_layers, self.make_norm, self.norm_position, self.branch_scale)
        block = (*fields, self.depth, train, self.make_slope)
        stream, records = scanned(ResidualBlock, block, BLOCKS, self.depth, stream, probes, norm_mask)
        if self.is_mutable_collection("intermediates"):
            for key, value in records.items():
                self.sow("intermediates", key, value)
            self.sow("intermediates", "h", records["z"])
        return nn.Dense(self.n_classes, name="output")(stream)

    def hidden_shape(self, batch: int) -> tuple[int, ...]:
        """The shape of every block's stream on ``batch`` examples."""
        return (batch, self.width)


Model = MLP | ResMLP | CNN


def build_model(cfg: Any, n_classes: int) -> Model:
    """The model described by a resolved run config (``model``, ``act``, ``norm`` nodes). Its initial
    values come from ``gradstudy.inputs.inits.initial_variables``, not from Flax's initializers."""
    make_norm = None if NORM_LAYERS[cfg.norm.name] is None else NORM_LAYERS[cfg.norm.name](cfg.norm)
    act = ACTIVATIONS[cfg.act.name]
    make_slope = None
    if act.learned_alpha:
        make_slope = partial(LearnedSlope, FUNCTIONS[cfg.act.name], act.alpha(cfg.act.alpha), cfg.act.per_unit)
    name = cfg.model.get("name", "mlp")
    if name == "cnn":
        return CNN(
            depth=cfg.model.depth,
            channels=cfg.model.channels,
            n_classes=n_classes,
            act=activation_fn(cfg.act.name, cfg.act.alpha),
            layout=IMAGE_LAYOUTS[cfg.data.name],
            kernel=cfg.model.kernel,
            padding=cfg.model.padding,
            downsample=bool(cfg.model.downsample),
            make_norm=make_norm,
            norm_position=cfg.norm.position,
            make_slope=make_slope,
        )
    if name == "resmlp":
        return ResMLP(
            depth=cfg.model.depth,
            width=cfg.model.width,
            n_classes=n_classes,
            act=activation_fn(cfg.act.name, cfg.act.alpha),
            branch_layers=cfg.model.branch_layers,
            make_norm=make_norm,
            norm_position=cfg.model.norm_position or "pre",
            branch_scale=cfg.model.branch_scale,
            make_slope=make_slope,
        )
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
