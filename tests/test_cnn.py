"""The convolutional net (``model=cnn``): its forward pass against a numpy convolution written by
hand, its per-layer statistics against float64 numpy and ``jax.grad``, conv fans and
delta-orthogonal init against their definitions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY, compose_config
from omegaconf import OmegaConf

from gradstudy.cells.statistics import stat_names
from gradstudy.engine.model import hidden_name
from gradstudy.engine.program import Engine, batch_indices
from gradstudy.inputs.data import IMAGE_LAYOUTS, load_dataset
from gradstudy.inputs.inits import CONV, STACK, fans, kernel_init

BASE = (*TINY, "model=cnn", "model.depth=3", "model.channels=4")
SEEDS = [2, 5]
VARIANTS = {
    "same": (),
    "circular, stride-2 stem, tanh": ("model.padding=circular", "model.downsample=true", "act=tanh"),
    "kernel 5, he": ("model.kernel=5", "init=he"),
    "1-D signal, circular": ("data=mnist1d", "model.padding=circular", "model.kernel=5"),
}
#: relu by where: jnp.maximum would pass half the gradient at z = 0 (every zero patch of an image), jax.nn.relu none
ACTS = {"relu": lambda xp, v: xp.where(v > 0, v, 0), "tanh": lambda xp, v: xp.tanh(v)}


def conv(xp, h, kernel, bias, stride, padding):
    """A convolution written out: zeros padded as XLA's SAME does (any odd row at the high end), or
    the image wrapped around by (k - 1) // 2 and k // 2 (Flax's circular padding, whatever the
    stride), then every tap's shifted input times its c_in x c_out matrix, summed."""
    spatial = h.shape[1:-1]
    window = kernel.shape[:-2]
    out = [-(-n // stride) for n in spatial]
    pads = []
    for n, k, o in zip(spatial, window, out, strict=True):
        total = max((o - 1) * stride + k - n, 0)
        pads.append(((k - 1) // 2, k // 2) if padding == "circular" else (total // 2, total - total // 2))
    mode = "wrap" if padding == "circular" else "constant"
    padded = xp.pad(h, [(0, 0), *pads, (0, 0)], mode=mode)
    result = 0
    for tap in np.ndindex(*window):
        rows = tuple(slice(t, t + stride * (o - 1) + 1, stride) for t, o in zip(tap, out, strict=True))
        result = result + padded[(slice(None), *rows, slice(None))] @ xp.asarray(kernel[tap])
    return result + xp.asarray(bias)


def conv_layer(params, layer):
    """Convolution ``layer``'s (from 1) kernel and bias: the first's own, the others' out of the stack."""
    if layer == 1:
        return params[hidden_name(1)]
    return jax.tree.map(lambda leaf: leaf[layer - 2], params[STACK][CONV])


def hand_forward(cfg, params, x, xp=np, probes=None):
    """The CNN written out: images, convolutions with their activation, mean over positions, output.
    Returns the logits and every layer's z and h."""
    layout = IMAGE_LAYOUTS[cfg.data.name]
    h = x.reshape(x.shape[0], *layout.shape)
    zs, hs = [], []
    for layer in range(1, cfg.model.depth + 1):
        stride = 2 if cfg.model.downsample and layer == 1 else 1
        own = conv_layer(params, layer)
        z = conv(xp, h, own["kernel"], own["bias"], stride, cfg.model.padding)
        if probes is not None:
            z = z + probes[layer - 1]
        h = ACTS[cfg.act.name](xp, z)
        zs.append(z)
        hs.append(h)
    pooled = h.mean(axis=tuple(range(1, h.ndim - 1)))
    return pooled @ xp.asarray(params["output"]["kernel"]) + xp.asarray(params["output"]["bias"]), zs, hs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_cnn_is_the_hand_written_convolution(variant):
    cfg = compose_config(*BASE, *VARIANTS[variant])
    dataset = load_dataset(cfg.data)
    engine = Engine(cfg, dataset)
    params = jax.tree.map(lambda a: np.asarray(a[0], np.float64), engine.init([0]).params)
    x = np.asarray(dataset.x_train[:20], np.float64)
    variables = {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)}
    logits = engine.model.apply(variables, x.astype(np.float32), train=False)
    expected, zs, _ = hand_forward(cfg, params, x)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=2e-4, atol=2e-5)
    assert zs[0].shape[1:] == engine.model.hidden_shape(1)[1:]


@pytest.mark.parametrize("variant", ["same", "circular, stride-2 stem, tanh"])
def test_per_layer_statistics_on_conv_layers_match_numpy_and_jax_grad(variant):
    cfg = compose_config(*BASE, *VARIANTS[variant], "train.steps=1", "train.eval_every=1", "stats.every=1")
    dataset = load_dataset(cfg.data)
    engine = Engine(cfg, dataset)
    state = engine.init(SEEDS)
    params = jax.tree.map(np.asarray, state.params)
    stats = engine.run(state, SEEDS).stats[0]
    names = stat_names("scalars", model="cnn")
    for i, seed in enumerate(SEEDS):
        idx = batch_indices(seed, len(dataset.y_train), cfg.train.batch_size, 0, 1)[0]
        x, y = np.asarray(dataset.x_train[idx], np.float64), dataset.y_train[idx]
        mine = jax.tree.map(lambda a: a[i], params)
        _, zs, hs = hand_forward(cfg, jax.tree.map(lambda a: a.astype(np.float64), mine), x)

        def got(name):
            return stats[i, :, names.index(name)]

        np.testing.assert_allclose(got("z_std"), [z.std() for z in zs], rtol=1e-4)
        np.testing.assert_allclose(got("act_mean"), [h.mean() for h in hs], rtol=1e-4, atol=1e-7)
        if cfg.act.name == "relu":  # a channel is dead when z <= 0 at every example and position
            dead = [np.mean(np.all(z <= 0, axis=(0, 1, 2))) for z in zs]
            np.testing.assert_allclose(got("dead_frac"), dead)
        else:
            saturated = [np.mean(np.abs(h) > 0.99) for h in hs]
            np.testing.assert_allclose(got("saturated_frac"), saturated)

        def loss_of_probes(probes, p=mine, x=x, y=y):
            logits, *_ = hand_forward(cfg, p, jnp.asarray(x, jnp.float32), jnp, probes)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        deltas = jax.grad(loss_of_probes)([jnp.zeros(z.shape, jnp.float32) for z in zs])
        np.testing.assert_allclose(got("delta_std"), [float(jnp.std(len(y) * d)) for d in deltas], rtol=1e-3)

        def loss_of_params(p, x=x, y=y):
            logits = engine.model.apply({"params": p}, jnp.asarray(x, jnp.float32), train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_of_params)(jax.tree.map(jnp.asarray, mine))
        norms = [float(jnp.linalg.norm(conv_layer(grads, k)["kernel"])) for k in range(1, cfg.model.depth + 1)]
        np.testing.assert_allclose(got("grad_norm"), norms, rtol=1e-3, atol=1e-8)


def _init(name, **values):
    node = compose_config(*BASE, f"init={name}").init
    return kernel_init(OmegaConf.merge(node, values))


@pytest.mark.parametrize(
    "name, values, variance",
    [
        ("he", {}, lambda i, o: 2 / i),
        ("lecun", {}, lambda i, o: 1 / i),
        ("xavier", {}, lambda i, o: 2 / (i + o)),
        ("meanfield", {"sigma_w2": 1.7}, lambda i, o: 1.7 / i),
        ("normal", {"sigma": 0.3}, lambda i, o: 0.09),
    ],
)
def test_conv_kernels_take_the_window_times_the_channels_as_their_fans(name, values, variance):
    shape = (3, 3, 16, 32)
    assert fans(shape) == (144, 288) and fans((5, 7)) == (5, 7)
    kernel = _init(name, **values)(np.random.default_rng(0), shape)
    # 4608 draws: the sample variance is within 6% of its value with probability > 0.999
    np.testing.assert_allclose(kernel.var(), variance(*fans(shape)), rtol=0.06)


def test_orthogonal_conv_kernel_is_the_reshaped_orthogonal_matrix():
    kernel = _init("orthogonal", scale=1.5)(np.random.default_rng(1), (3, 3, 8, 16))
    matrix = kernel.reshape(72, 16)
    np.testing.assert_allclose(matrix.T @ matrix, 2.25 * np.eye(16), atol=1e-12)


@pytest.mark.parametrize("c_in, c_out", [(8, 8), (4, 16)])
def test_delta_orthogonal_is_an_orthogonal_centre_tap_and_an_isometry_on_the_zero_frequency_mode(c_in, c_out):
    sigma_w2 = 1.3
    kernel = _init("delta_orthogonal", sigma_w2=sigma_w2)(np.random.default_rng(2), (3, 3, c_in, c_out))
    centre = kernel[1, 1]
    np.testing.assert_allclose(centre @ centre.T, sigma_w2 * np.eye(c_in), atol=1e-12)
    off_centre = np.ones((3, 3), bool)
    off_centre[1, 1] = False
    assert not kernel[off_centre].any()
    # the zero-frequency mode: an image equal at every position keeps its norm times sqrt(sigma_w2)
    x = np.broadcast_to(np.random.default_rng(3).standard_normal((2, 1, 1, c_in)), (2, 6, 6, c_in))
    layer = nn.Conv(c_out, (3, 3), padding="CIRCULAR", use_bias=False)
    out = np.asarray(layer.apply({"params": {"kernel": jnp.asarray(kernel, jnp.float32)}}, jnp.asarray(x)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.sqrt(sigma_w2) * np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_each_convolution_draws_from_its_own_stream_as_an_mlp_layer_does():
    """Layer l of the stack is drawn from stream l, so its values do not depend on the depth."""
    params = {}
    for depth in (3, 5):
        cfg = compose_config(*BASE, f"model.depth={depth}", "init=he")
        params[depth] = jax.tree.map(lambda a: np.asarray(a[0]), Engine(cfg, load_dataset(cfg.data)).init([4]).params)
    for layer in (1, 2, 3):
        np.testing.assert_array_equal(conv_layer(params[3], layer)["kernel"], conv_layer(params[5], layer)["kernel"])
    assert params[5][STACK][CONV]["kernel"].shape[0] == 4


def test_delta_orthogonal_s_first_convolution_is_an_isometry_from_patches():
    """Layer 1 sees the image: a centre tap would see one pixel, so it is the reshaped orthogonal kernel."""
    cfg = compose_config(*BASE, "init=delta_orthogonal", "init.sigma_w2=1.2", "model.channels=12")
    params = jax.tree.map(lambda a: np.asarray(a[0], np.float64), Engine(cfg, load_dataset(cfg.data)).init([0]).params)
    first = params[hidden_name(1)]["kernel"].reshape(9, 12)
    np.testing.assert_allclose(first @ first.T, 1.2 * np.eye(9), atol=1e-6)
    rest = conv_layer(params, 2)["kernel"]
    np.testing.assert_allclose(rest[1, 1] @ rest[1, 1].T, 1.2 * np.eye(12), atol=1e-6)
    assert not rest[0].any() and not rest[2].any()
