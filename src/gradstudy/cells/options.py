"""What each option of the config groups is, without jax: the names that validation checks and the
traits that the statistics, the tables and the figures read.

The engine holds the computation of each option under the same name (``engine.activations``,
``engine.model.NORM_LAYERS``, ``engine.optim.FACTORIES``); a test checks that the names agree.
Adding an activation is one entry here, one function there and one YAML file in ``conf/act/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activation:
    """What an activation is, for the statistics: its flat regions, dead units, range and slope."""

    default_alpha: float | None = None
    #: h outside [lo, hi] sits on a flat part of the curve (``saturated_frac``); None: no flat part.
    saturation: tuple[float, float] | None = None
    #: A unit with z <= 0 on every example passes no gradient at all (``dead_frac``).
    has_dead_units: bool = False
    #: The closed range of a bounded activation's output (its histograms use linear bins over it).
    bounds: tuple[float, float] | None = None
    #: Linear for z > 0 with a kink at 0: a unit whose z <= 0 on a whole batch sits on the other piece.
    rectifier: bool = False
    #: alpha is a parameter that training learns (PReLU), one per layer or per unit, starting at alpha.
    learned_alpha: bool = False

    def alpha(self, alpha: float | None) -> float | None:
        """``act.alpha``, or this activation's default when it is null."""
        return self.default_alpha if alpha is None else alpha


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(saturation=(0.01, 0.99), bounds=(0.0, 1.0)),
    "tanh": Activation(saturation=(-0.99, 0.99), bounds=(-1.0, 1.0)),
    "softsign": Activation(saturation=(-0.9, 0.9), bounds=(-1.0, 1.0)),
    "relu": Activation(has_dead_units=True, rectifier=True),
    "leaky_relu": Activation(default_alpha=0.01, rectifier=True),
    # He et al. 2015: a leaky ReLU whose slope alpha is learned, starting at 0.25.
    "prelu": Activation(default_alpha=0.25, rectifier=True, learned_alpha=True),
    "elu": Activation(default_alpha=1.0, rectifier=True),
    "selu": Activation(rectifier=True),
    "gelu": Activation(),
    "swish": Activation(),
    "linear": Activation(),
}

#: Models (``model.name``): ``mlp``, ``depth`` hidden layers; ``resmlp``, an input projection then
#: ``depth`` residual blocks x <- x + a * F(x), F being ``model.branch_layers`` pre-activation dense
#: layers; ``cnn``, ``depth`` convolutions of ``model.channels`` channels, global average pooling
#: and a softmax layer (``engine.model``).
MODELS = ("mlp", "resmlp", "cnn")
#: ``model.padding`` of a convolutional net: zeros outside the image (``same``) or the image wrapped
#: around (``circular``, Xiao et al. 2018's, under which every layer is translation invariant).
CNN_PADDINGS = ("same", "circular")
#: ``model.branch_scale``: the branch multiplier a. ``one``: 1; ``inv_sqrt_depth``: 1/sqrt(depth),
#: fixed; ``skipinit``: a learned scalar per block multiplying F (De & Smith 2020), applied before a
#: post-addition norm; ``rezero``: the same scalar (Bachlechner et al. 2020), and no norm on the
#: stream (a post-addition norm is refused).
BRANCH_SCALES = ("one", "inv_sqrt_depth", "skipinit", "rezero")
#: ``model.norm_position`` of a residual net: ``pre`` (inside the branch, before each activation),
#: ``post`` (on the stream, after the addition); null: ``pre`` when ``norm`` is not none.
RESIDUAL_NORM_POSITIONS = ("pre", "post")

#: Normalization layers (``norm.name``) and where they sit (``norm.position``: before or after the
#: activation).
NORMS = ("none", "batchnorm", "layernorm")
NORM_POSITIONS = ("before", "after")

#: Optimizer name -> the ``optim`` keys it reads; every one is a per-run hyperparameter held in the
#: optimizer state, ``clip_norm`` too when clipping is on.
OPTIMIZERS: dict[str, tuple[str, ...]] = {"sgd": ("lr",), "momentum": ("lr", "momentum"), "adam": ("lr",)}
