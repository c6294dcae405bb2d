"""Compatibility warnings: combinations that theory says train badly, each with its number.

These are warnings, not errors: researchers break these rules on purpose (that is what a grid of
Xavier against He with ReLU is for). ``compatibility_warnings`` returns one line per rule a cell
breaks; ``gradstudy.run`` prints each once per cell and keeps them in the cell's ``meta.json``.

Each rule is a function of the cell's config and the data's second moment (``Inputs``) that returns
its warning or None; adding a rule is one function plus one entry in ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradstudy.cells.schedules import learning_rates
from gradstudy.inputs.data import IMAGE_LAYOUTS
from gradstudy.inputs.inits import bias_variance, fixup_factor, weight_variance

#: Depths beyond which a rule's vanishing gradient is worth a warning.
XAVIER_RELU_DEPTH, SIGMOID_DEPTH = 10, 4


def _theory() -> Any:
    """``gradstudy.theory``, imported when a rule fires: it loads scipy (about 0.3 s of a run's start),
    which a cell that breaks no rule never needs."""
    from gradstudy import theory

    return theory


@dataclass(frozen=True)
class Inputs:
    """What the rules need of the data: E[x^2] over examples and features, and the feature count."""

    data_q: float
    n_inputs: int


def data_inputs(dataset: Any) -> Inputs:
    """``Inputs`` of a loaded dataset, from its training split."""
    x = np.asarray(dataset.x_train, np.float64)
    return Inputs(data_q=float(np.mean(x**2)), n_inputs=int(dataset.n_features))


def cell_inputs(cfg: Any, inputs: Inputs) -> dict[str, Any]:
    """The fields of ``theory.CellInputs`` for the cell ``cfg`` on data ``inputs``, as plain data for
    its ``meta.json``: each hidden layer's sigma_w2 under the cell's initializer (the first one's
    fan-in is the data's) and sigma_b2. For a residual net: the input projection's, then each
    branch layer's (every block's are alike; Fixup's factors included). Made without loading the
    theory (and scipy)."""
    width = cfg.model.width
    if cfg.model.get("name", "mlp") == "resmlp":
        m, depth = cfg.model.branch_layers, cfg.model.depth
        fixup = cfg.init.name == "fixup"
        branch = [_sigma_w2(cfg) * (fixup_factor(j, m, depth) ** 2 if fixup else 1.0) for j in range(1, m + 1)]
        sigma_w2 = [weight_variance(cfg.init, inputs.n_inputs, width) * inputs.n_inputs, *branch]
    else:
        sigma_w2 = [weight_variance(cfg.init, fan_in, fan_out) * fan_in for fan_in, fan_out in layer_fans(cfg, inputs)]
    return {
        "data_q": inputs.data_q,
        "n_inputs": inputs.n_inputs,
        "sigma_w2": sigma_w2,
        "sigma_b2": bias_variance(cfg.init),
    }


def layer_fans(cfg: Any, inputs: Inputs) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each hidden layer of a plain net: an MLP's widths, or a convolution's
    window size times its input and output channels (``inputs.fans``)."""
    if cfg.model.get("name", "mlp") == "cnn":
        layout = IMAGE_LAYOUTS[cfg.data.name]
        window, channels = cfg.model.kernel ** len(layout.spatial), cfg.model.channels
        first, hidden = window * layout.channels, window * channels
        return [(first, hidden), *[(hidden, hidden)] * (cfg.model.depth - 1)]
    widths = [inputs.n_inputs, *[cfg.model.width] * cfg.model.depth]
    return list(zip(widths[:-1], widths[1:], strict=True))


def _sigma_w2(cfg: Any) -> float:
    """The hidden layers' sigma_w2 (weight variance times fan-in) under the cell's initializer."""
    if cfg.model.get("name", "mlp") == "cnn":
        fan = cfg.model.kernel ** len(IMAGE_LAYOUTS[cfg.data.name].spatial) * cfg.model.channels
    else:
        fan = cfg.model.width
    return weight_variance(cfg.init, fan, fan) * fan


def _delta_ratio(cfg: Any, inputs: Inputs) -> str:
    """The predicted first-to-last hidden layer ratio of the std of delta, as text (or why there is none)."""
    reason = _theory().not_applicable(cfg)
    if reason is not None:
        return f"(no mean-field prediction: {reason})"
    try:
        theory = _theory()
        delta = theory.predicted_profile(cfg, theory.CellInputs(**cell_inputs(cfg, inputs))).delta_std
    except ValueError as err:
        return f"(no mean-field prediction: {err})"
    ratio = delta[0] / delta[-1]
    shown = f"1/{1 / ratio:.3g}" if ratio < 1 else f"{ratio:.3g}"
    return f"mean-field theory predicts std(delta) at layer 1 / at layer {cfg.model.depth} = {shown}"


def selu_conditions(cfg: Any, inputs: Inputs) -> str | None:
    """SELU self-normalizes only from LeCun normal weights, on standardized inputs, without batch norm."""
    if cfg.act.name != "selu":
        return None
    broken = []
    lecun = (
        cfg.init.name in ("lecun", "meanfield")
        and abs(_sigma_w2(cfg) - 1.0) < 1e-9
        and cfg.init.get("distribution", "normal") != "uniform"
    )
    if not lecun:
        broken.append(f"init={cfg.init.name} (sigma_w2 = {_sigma_w2(cfg):.3g}, not LeCun normal's 1)")
    if cfg.norm.name != "none":
        broken.append(f"norm={cfg.norm.name} (it replaces the self-normalizing fixed point)")
    if not cfg.data.get("standardize", False):
        broken.append(f"data.standardize=false (inputs have E[x^2] = {inputs.data_q:.3g}, not 1)")
    if not broken:
        return None
    chi = _theory().chi1("selu", 1.0, 0.0)
    return (
        "SELU's fixed point (mean 0, variance 1: q* = 1, chi1 = "
        f"{chi:.4f}) needs LeCun normal weights, standardized inputs and no normalization layer; this cell has "
        + "; ".join(broken)
    )


def _plain(cfg: Any) -> bool:
    """A plain MLP: the rules of a signal through a stack of layers (a residual net's skip path
    carries it past them)."""
    return cfg.model.get("name", "mlp") == "mlp"


def he_with_saturating(cfg: Any, inputs: Inputs) -> str | None:
    """He init doubles the variance for ReLU's lost half; a tanh or sigmoid keeps both halves."""
    if not _plain(cfg) or cfg.init.name not in ("he", "he_uniform") or cfg.act.name not in ("sigmoid", "tanh"):
        return None
    chi = _theory().chi1(cfg.act.name, _sigma_w2(cfg), bias_variance(cfg.init))
    return (
        f"He init with {cfg.act.name}: sigma_w2 = {_sigma_w2(cfg):.3g} puts {cfg.act.name} at chi1 = {chi:.3g} "
        f"(1 is the edge of chaos); {_delta_ratio(cfg, inputs)}"
    )


def xavier_with_deep_relu(cfg: Any, inputs: Inputs) -> str | None:
    """Xavier's variance halves at every ReLU layer, and so does E[delta^2] on the way down."""
    if (
        not _plain(cfg)
        or cfg.init.name not in ("xavier", "xavier_normal")
        or cfg.act.name != "relu"
        or cfg.model.depth <= XAVIER_RELU_DEPTH
    ):
        return None
    return f"Xavier init with ReLU at depth {cfg.model.depth}: chi1 = {_theory().chi1('relu', _sigma_w2(cfg), bias_variance(cfg.init)):.3g} per layer; {_delta_ratio(cfg, inputs)}"


def deep_sigmoid(cfg: Any, inputs: Inputs) -> str | None:
    """The logistic sigmoid's slope is at most 1/4: without batch norm delta shrinks at every layer."""
    if not _plain(cfg) or cfg.act.name != "sigmoid" or cfg.norm.name != "none" or cfg.model.depth <= SIGMOID_DEPTH:
        return None
    return (
        f"sigmoid at depth {cfg.model.depth} without batch norm: its slope is at most 1/4; {_delta_ratio(cfg, inputs)}"
    )


def schedule_stops_training(cfg: Any, inputs: Inputs) -> str | None:
    """A schedule that reaches a rate of 0 before the last step leaves the rest of the run untrained,
    so the cell's final metrics, AUC and steps to target describe an earlier point than its steps say."""
    if cfg.optim.get("schedule", "constant") == "constant":
        return None
    rates = learning_rates(cfg.optim, cfg.train.steps)
    moving = np.flatnonzero(rates > 0)
    stop = int(moving[-1]) + 1 if len(moving) else 0
    if stop >= cfg.train.steps - 1:
        return None
    fix = "a factor above 0" if cfg.optim.schedule == "step" else "optim.decay_steps=null or optim.end_lr above 0"
    return (
        f"optim.schedule={cfg.optim.schedule} reaches a learning rate of 0 at step {stop}: the parameters stop changing "
        f"for the last {cfg.train.steps - stop} of {cfg.train.steps} steps, so the cell's final metrics are those of "
        f"step {stop}; set {fix}"
    )


RULES: list[Callable[[Any, Inputs], str | None]] = [
    selu_conditions,
    he_with_saturating,
    xavier_with_deep_relu,
    deep_sigmoid,
    schedule_stops_training,
]


def compatibility_warnings(cfg: Any, inputs: Inputs) -> list[str]:
    """One line per rule of ``RULES`` that the cell ``cfg`` breaks."""
    return [w for rule in RULES if (w := rule(cfg, inputs)) is not None]
