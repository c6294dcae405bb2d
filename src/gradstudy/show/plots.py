"""Figures: one function per figure; each takes a ``Study`` and returns a ``Plot`` (pages and notes).

Every function takes ``hue=``, ``style=``, ``col=`` and ``row=`` (config keys, ``study``, or the
figure's own keys such as ``layer``) and ``wrap=`` (panels per line); ``gradstudy.show.encoding`` picks
what the user leaves open from the study's varying keys. Colours come from one mapping per figure,
panels of one measure share their y axis, and a figure taller than about 2,400 px is split into
pages. Divergence and collapse are drawn: ✕ where a seed diverged, ⊘ where one collapsed, hatching
after divergence on heat maps; ``end`` pools the seeds that trained to the last step, and a
diverged seed is drawn apart at its last healthy step (``analysis.phase_layers``).

This module does not choose a matplotlib backend: the command-line tools do, so a notebook keeps its own.
"""

from gradstudy.show.convergence import latency_rounds, steps_to_target_figure
from gradstudy.show.distributions import layer_histograms, preactivation_percentiles, unit_percentiles
from gradstudy.show.heatmaps import grad_norm_heatmap, phase_diagram
from gradstudy.show.lines import (
    activation_over_training,
    learning_curves,
    negative_frac_over_training,
    saturation_over_training,
    unit_mean_median_over_training,
)
from gradstudy.show.plot import Plot
from gradstudy.show.profiles import (
    activation_profile,
    branch_profile,
    gradient_profile,
    prediction_notes,
    shattering_profile,
    variance_profile,
)
from gradstudy.show.spectra import spectrum_density, spectrum_profile

__all__ = [
    "Plot",
    "activation_over_training",
    "activation_profile",
    "branch_profile",
    "grad_norm_heatmap",
    "gradient_profile",
    "latency_rounds",
    "layer_histograms",
    "learning_curves",
    "negative_frac_over_training",
    "phase_diagram",
    "preactivation_percentiles",
    "prediction_notes",
    "saturation_over_training",
    "shattering_profile",
    "spectrum_density",
    "spectrum_profile",
    "steps_to_target_figure",
    "unit_mean_median_over_training",
    "unit_percentiles",
    "variance_profile",
]
