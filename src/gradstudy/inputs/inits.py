"""Weight initializers: a registry from name to a builder of a numpy initializer.

Every builder takes the ``init`` config node, so ``init.scale``, ``init.mode`` and
``init.distribution`` override a preset (``init=he init.mode=fan_avg``). The presets themselves
live in ``conf/init/<name>.yaml``; adding an initializer is one entry here plus one YAML file.

Initial values are drawn in numpy, outside any compiled program: an initializer is a function
``(rng, shape) -> float64 array``, the shape being a dense kernel's (fan_in, fan_out) or a
convolution's (*window, c_in, c_out), whose fans are the window's size times c_in and c_out (``fans``). Drawn by ``jax.random`` under ``jit``, the same
values cost a compile of 1.5 s per initializer on CPU, and a batched program of QR decompositions
(orthogonal init) hangs on XLA's CPU backend (jax 0.10). The distributions are JAX's
(``jax.nn.initializers``): "truncated_normal" is cut at two standard deviations and rescaled so
that the variance is still scale/fan, and an orthogonal matrix takes the signs of R's diagonal.

``initial_variables`` fills a model's variable tree: every dense layer's kernel and bias from the
``init`` node, with its own generator seeded by (``INIT_STREAM``, seed, layer), and the
normalization layers' scale, shift and running statistics at their fixed starting values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Initializer = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
#: Unit-variance draws of each distribution of ``variance_scaling``.
DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "truncated_normal": lambda rng, shape: _truncated_standard_normal(rng, shape) / TRUNCATED_STD,
    "uniform": lambda rng, shape: rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape),
}
#: The standard deviation of a standard normal cut at +-2.
TRUNCATED_STD = 0.87962566103423978
#: The first word of every initializer's seed, so that no initial value shares a stream with the
#: minibatch order (``engine.batch_indices`` seeds by (seed, epoch)).
INIT_STREAM = 0x1417


def _truncated_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws cut at +-2, by redrawing the ones outside (4.6% per round)."""
    out = rng.standard_normal(shape)
    outside = np.abs(out) > 2
    while outside.any():
        out[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(out) > 2
    return out


def _fan(mode: str, fan_in: int, fan_out: int) -> float:
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel: a dense (fan_in, fan_out) one's, or a convolution's
    (*window, c_in, c_out): window size times c_in, and times c_out."""
    window = int(np.prod(shape[:-2], dtype=np.int64))
    return window * shape[-2], window * shape[-1]


def variance_scaling(cfg: Any) -> Initializer:
    """Var(W) = scale / fan, with fan chosen by ``mode``: Xavier, He, LeCun and Glorot's "standard"."""
    scale, mode, draw = cfg.scale, cfg.mode, DISTRIBUTIONS[cfg.distribution]
    return lambda rng, shape: draw(rng, shape) * np.sqrt(scale / _fan(mode, *fans(shape)))


def orthogonal_matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A random (semi-)orthogonal matrix, Haar-distributed: orthonormal columns when it is tall,
    orthonormal rows when it is wide."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


def orthogonal(cfg: Any) -> Initializer:
    """A (semi-)orthogonal matrix times the gain ``init.scale``; a convolution's kernel is the
    (window size * c_in, c_out) matrix reshaped (Saxe et al. 2014)."""
    gain = cfg.scale
    return lambda rng, shape: gain * orthogonal_matrix(rng, *fans(shape)[:1], shape[-1]).reshape(shape)


def delta_orthogonal(cfg: Any) -> Initializer:
    """Xiao et al. 2018's Algorithm 2: a convolution kernel that is zero but for its centre tap, a
    random (c_in, c_out) orthogonal matrix times sqrt(sigma_w2); a dense kernel is that matrix. With
    c_in <= c_out the centre tap has orthonormal rows, so the layer is sqrt(sigma_w2) times an
    isometry. A CNN's first convolution is drawn by ``first_conv_orthogonal`` instead."""
    gain = float(np.sqrt(cfg.sigma_w2))

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape)
        out[tuple(n // 2 for n in shape[:-2])] = gain * orthogonal_matrix(rng, shape[-2], shape[-1])
        return out

    return init


def first_conv_orthogonal(cfg: Any) -> Initializer:
    """Delta-orthogonal's first convolution, which sees the image: its centre tap alone would give
    every channel a multiple of one pixel's c_in values (rank c_in), so the whole kernel is drawn
    as the reshaped orthogonal (window size * c_in, c_out) matrix times sqrt(sigma_w2), an isometry
    from patches to channels when window size * c_in <= c_out (``validate`` refuses fewer channels)."""
    gain = float(np.sqrt(cfg.sigma_w2))
    return lambda rng, shape: gain * orthogonal_matrix(rng, fans(shape)[0], shape[-1]).reshape(shape)


def gaussian(cfg: Any) -> Initializer:
    """N(0, sigma^2) whatever the fan: the "bad" initialization of the textbooks."""
    sigma = cfg.sigma
    return lambda rng, shape: sigma * rng.standard_normal(shape)


def mean_field(cfg: Any) -> Initializer:
    """N(0, sigma_w2 / fan_in), the weights of mean-field theory (``gradstudy.theory``)."""
    sigma_w2 = cfg.sigma_w2
    return lambda rng, shape: rng.standard_normal(shape) * np.sqrt(sigma_w2 / fans(shape)[0])


INITIALIZERS: dict[str, Callable[[Any], Initializer]] = {
    "xavier": variance_scaling,
    "xavier_normal": variance_scaling,
    "he": variance_scaling,
    "he_uniform": variance_scaling,
    "lecun": variance_scaling,
    "lecun_uniform": variance_scaling,
    "standard": variance_scaling,
    # The chapter "Training Deep Neural Nets"'s formulas as it writes them (conf/init/chapter_*.yaml).
    "chapter_xavier_normal": variance_scaling,
    "chapter_xavier_uniform": variance_scaling,
    "chapter_he_normal": variance_scaling,
    "chapter_he_uniform": variance_scaling,
    "orthogonal": orthogonal,
    "normal": gaussian,
    "meanfield": mean_field,
    "delta_orthogonal": delta_orthogonal,
    # Zhang et al. 2019: He normal, rescaled per layer by its place in a residual net (``fixup_scale``).
    "fixup": variance_scaling,
}

#: name -> Var(W) of a (fan_in, fan_out) kernel, as ``(init node, fan_in, fan_out) -> variance``:
#: what mean-field theory needs of an initializer (its sigma_w2 is this times fan_in). An orthogonal
#: kernel's entries have variance gain^2 / max(fan_in, fan_out) (unit columns, or unit rows when wide).
WEIGHT_VARIANCES: dict[str, Callable[[Any, int, int], float]] = {
    **{
        name: lambda cfg, i, o: cfg.scale / _fan(cfg.mode, i, o)
        for name, build in INITIALIZERS.items()
        if build is variance_scaling
    },
    "orthogonal": lambda cfg, i, o: cfg.scale**2 / max(i, o),
    "normal": lambda cfg, i, o: cfg.sigma**2,
    "meanfield": lambda cfg, i, o: cfg.sigma_w2 / i,
    # the centre tap's entries have sigma_w2 / max(c_in, c_out), the other taps 0
    "delta_orthogonal": lambda cfg, i, o: cfg.sigma_w2 / max(i, o),
}
#: The initializers whose biases are drawn from N(0, sigma_b2), as mean-field theory takes them.
MEAN_FIELD_BIASES = ("meanfield", "delta_orthogonal")


def kernel_init(cfg: Any) -> Initializer:
    """The weight initializer named by ``cfg.name`` with the node's parameters."""
    return INITIALIZERS[cfg.name](cfg)


def weight_variance(cfg: Any, fan_in: int, fan_out: int) -> float:
    """Var(W) of a (fan_in, fan_out) kernel drawn by the initializer ``cfg``."""
    return WEIGHT_VARIANCES[cfg.name](cfg, fan_in, fan_out)


def bias_variance(cfg: Any) -> float:
    """The variance of the biases: sigma_b2 for ``MEAN_FIELD_BIASES``, ``init.bias_std`` squared otherwise."""
    return cfg.sigma_b2 if cfg.name in MEAN_FIELD_BIASES else cfg.bias_std**2


def bias_init(cfg: Any) -> Initializer:
    """Biases drawn from N(``init.bias``, ``init.bias_std``^2), a constant when bias_std is 0 (the
    presets); ``MEAN_FIELD_BIASES`` draw them from N(0, sigma_b2)."""
    mean = 0.0 if cfg.name in MEAN_FIELD_BIASES else cfg.bias
    std = float(np.sqrt(bias_variance(cfg)))
    if std == 0:
        return lambda rng, shape: np.full(shape, mean, np.float64)
    return lambda rng, shape: mean + std * rng.standard_normal(shape)


#: The collections a run's state keeps (the model's probes and records are made afresh at each step).
VARIABLE_COLLECTIONS = ("params", "batch_stats")
#: The starting value of each variable of a normalization layer (Flax's BatchNorm and LayerNorm).
NORM_VALUES: dict[str, float] = {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0}


#: The parameter-tree name of a residual net's blocks, every variable stacked over blocks on a leading
#: axis (``engine.model.ResMLP``), and of the ``j``-th dense layer of each branch inside it.
BLOCKS = "blocks"
BLOCK_DENSE = re.compile(r"dense(\d+)")
#: The parameter-tree name of a CNN's convolutions 2..depth, stacked on a leading axis
#: (``engine.model.CNN``), and of the convolution inside it; layer l draws from stream l, as an MLP's.
STACK, CONV = "hiddens", "conv"
#: The stream number of a residual net's input projection; block l's layer j draws from
#: ``BLOCK_STREAM * l + j``, so that no two dense layers share a stream.
INPUT_STREAM, BLOCK_STREAM = 1_000_000, 1000


def dense_layer_number(name: str) -> int | None:
    """The layer number that seeds a dense layer's draws (hidden k -> k, the output layer -> 0, a
    residual net's input projection as ``INPUT_STREAM``), or None for a module that is not a
    dense layer or is a residual block's (``block_layer_numbers``)."""
    if name == "output":
        return 0
    if name == "input":
        return INPUT_STREAM
    if name.startswith("hidden") and name[len("hidden") :].isdigit():
        return int(name[len("hidden") :])
    return None


def block_layer_numbers(name: str, depth: int) -> list[int] | None:
    """The stream of each block's copy of the branch's dense layer ``name`` (``dense{j}``): block l
    draws from ``BLOCK_STREAM * l + j``; None for a block module that is not a dense layer."""
    dense = BLOCK_DENSE.fullmatch(name)
    return None if dense is None else [BLOCK_STREAM * block + int(dense[1]) for block in range(1, depth + 1)]


def fixup_factor(j: int, m: int, depth: int) -> float:
    """Fixup's factor on the He-normal kernel of layer ``j`` (from 1) of a branch of ``m`` layers in
    a net of ``depth`` blocks: depth^(-1/(2m-2)), and 0 for the branch's last layer (Zhang et al.
    2019, section 3)."""
    return 0.0 if j == m else float(depth ** (-1.0 / (2 * m - 2)))


def initial_variables(
    cfg: Any, shapes: Mapping[str, Any], seed: int, constants: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """One run's initial variables, with the structure, shapes and dtypes of ``shapes`` (the model's
    ``init`` under ``jax.eval_shape``): its ``VARIABLE_COLLECTIONS``, as numpy arrays. A variable of
    a module that is not a dense layer starts at its ``NORM_VALUES`` or ``constants`` value by name
    (``model.initial_constants``: a learned slope's alpha). A residual block's dense layer is
    drawn block by block, each from its own stream, and stacked; under ``init=fixup`` its kernel
    is scaled by ``fixup_factor``, the output layer's is zero."""
    kernel, bias = kernel_init(cfg), bias_init(cfg)
    fixed = {**NORM_VALUES, **(constants or {})}
    blocks = shapes.get("params", {}).get(BLOCKS, {})
    branch_layers = sum(BLOCK_DENSE.fullmatch(name) is not None for name in blocks)

    def constant(collection: str, name: str, leaves: Mapping[str, Any]) -> dict[str, np.ndarray]:
        unknown = set(leaves) - set(fixed)
        if unknown:
            raise ValueError(f"no initial value for {collection}/{name}/{sorted(unknown)}")
        return {k: np.full(v.shape, fixed[k], v.dtype) for k, v in leaves.items()}

    def dense(
        layer: int, leaves: Mapping[str, Any], shape: tuple[int, ...], factor: float
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([INIT_STREAM, seed, layer])
        return kernel(rng, shape) * factor, bias(rng, leaves["bias"].shape[-1:])

    def cast(values: np.ndarray, like: Any) -> np.ndarray:
        return values.astype(like.dtype)

    def module(collection: str, name: str, leaves: Mapping[str, Any]) -> dict[str, Any]:
        if name == BLOCKS:
            return {sub: block_module(collection, sub, sub_leaves) for sub, sub_leaves in leaves.items()}
        if name == STACK:
            return {sub: stack_module(collection, sub, sub_leaves) for sub, sub_leaves in leaves.items()}
        layer = dense_layer_number(name)
        if layer is None:
            return constant(collection, name, leaves)
        factor = 0.0 if cfg.name == "fixup" and name == "output" else 1.0
        if cfg.name == "delta_orthogonal" and layer == 1 and leaves["kernel"].ndim > 2:
            rng = np.random.default_rng([INIT_STREAM, seed, layer])
            w = first_conv_orthogonal(cfg)(rng, leaves["kernel"].shape)
            return {"kernel": cast(w, leaves["kernel"]), "bias": cast(bias(rng, leaves["bias"].shape), leaves["bias"])}
        w, b = dense(layer, leaves, leaves["kernel"].shape, factor)
        return {"kernel": cast(w, leaves["kernel"]), "bias": cast(b, leaves["bias"])}

    def block_module(collection: str, name: str, leaves: Mapping[str, Any]) -> dict[str, np.ndarray]:
        depth = next(iter(leaves.values())).shape[0]
        layers = block_layer_numbers(name, depth)
        if layers is None:
            return constant(collection, f"{BLOCKS}/{name}", leaves)
        j = int(BLOCK_DENSE.fullmatch(name)[1])
        factor = fixup_factor(j, branch_layers, depth) if cfg.name == "fixup" else 1.0
        drawn = [dense(layer, leaves, leaves["kernel"].shape[1:], factor) for layer in layers]
        return {
            "kernel": cast(np.stack([w for w, _ in drawn]), leaves["kernel"]),
            "bias": cast(np.stack([b for _, b in drawn]), leaves["bias"]),
        }

    def stack_module(collection: str, name: str, leaves: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if name != CONV:
            return constant(collection, f"{STACK}/{name}", leaves)
        layers = range(2, 2 + leaves["kernel"].shape[0])
        drawn = [dense(layer, leaves, leaves["kernel"].shape[1:], 1.0) for layer in layers]
        return {
            "kernel": cast(np.stack([w for w, _ in drawn]), leaves["kernel"]),
            "bias": cast(np.stack([b for _, b in drawn]), leaves["bias"]),
        }

    return {
        collection: {name: module(collection, name, leaves) for name, leaves in shapes[collection].items()}
        for collection in VARIABLE_COLLECTIONS
        if collection in shapes
    }
