"""The input-output Jacobian's spectrum (``stats.extra=[jacobian_spectrum]``), as the config and
the tables see it: which steps measure it, which method, its stored statistics and its fixed bins.
The computation is ``engine.spectrum``'s.

For example x (the first ``stats.jacobian_inputs`` training examples) and hidden layer l, J_l =
dh_l/dx is the Jacobian of the layer's activations (all units, and a CNN's every position) with
respect to the input; its r = min(inputs, units) squared singular values, pooled over the
examples, are the spectrum (Pennington, Schoenholz & Ganguli 2017). A batch norm is taken in its
evaluation form (running averages), so J is the map each example goes through on its own.

* ``exact``: J_l in full, by forward mode along every input direction, then the eigenvalues of
  J_l J_l^T (or J_l^T J_l, the smaller): their mean, variance and maximum at every layer, and
  their counts in ``SPECTRUM_BINS``;
* ``hutchinson``, when J would take more than ``EXACT_BYTES`` per example: ``PROBES`` fixed
  Gaussian directions v per example. At every layer the mean is E|J v|^2 / r (Hutchinson's
  estimate of tr(J^T J) / r); at the last layer the second moment is E|J^T J v|^2 / r, giving the
  variance, and the maximum is ``POWER_ITERATIONS`` steps of power iteration on J^T J. No bins.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradstudy.cells.statistics import BinKind, HistBins

#: The stored statistics of a spectrum, in the engine's order (``SPECTRA`` table's ``stat``).
SPECTRUM_STATS = ("sv2_mean", "sv2_var", "sv2_max")
#: The histogram quantity of the squared singular values (``HISTS`` table, with ``SPECTRUM_BINS``).
SPECTRUM_QUANTITY = "jacobian_sv2"
#: Log-spaced bins over squared singular values from 1e-8 to 1e8, four per decade.
SPECTRUM_BINS = HistBins(BinKind.LOG, 1e-8, 1e8, 64)
EXACT, HUTCHINSON = "exact", "hutchinson"
#: The largest stacked Jacobian (every layer's, one example, float32) computed exactly.
EXACT_BYTES = 256 * 2**20
PROBES = 32
POWER_ITERATIONS = 30


def spectrum_method(depth: int, n_inputs: int, units: int) -> str:
    """``exact`` when every layer's full Jacobian of one example fits in ``EXACT_BYTES``, else ``hutchinson``."""
    return EXACT if 4 * depth * n_inputs * units <= EXACT_BYTES else HUTCHINSON


def spectrum_bytes(depth: int, n_inputs: int, units: int) -> int:
    """The memory one example's Jacobian computation holds: its tangents at every layer, three times
    over (the forward pass's own, the tangents, and the Gram matrices or the reverse pass)."""
    directions = n_inputs if spectrum_method(depth, n_inputs, units) == EXACT else PROBES
    return 3 * 4 * depth * directions * units


def spectrum_steps(steps: int, hist_steps: Sequence[int]) -> list[int]:
    """Step 0, the histogram steps (``stats=full``) and the last step: where the spectrum is measured."""
    return sorted({0, steps, *hist_steps})
