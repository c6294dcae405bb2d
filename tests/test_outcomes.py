"""Collapsed seeds and cells, and intervals that stay inside their quantity's range."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special
from scipy import stats as sps

from gradstudy import load_study
from gradstudy.analysis.convergence import convergence_table
from gradstudy.analysis.profiles import gradient_table
from gradstudy.analysis.seeds import bounded_interval, mean_ci
from gradstudy.callbacks import print_summary
from gradstudy.cells.statistics import Summary
from gradstudy.run import run_cells
from gradstudy.show.plots import learning_curves, saturation_over_training
from gradstudy.show.summary import collapsed_text, summary_table
from gradstudy.store.outcomes import COLLAPSE_TOLERANCE, COLLAPSE_WINDOW, FLOAT32_TINY, cell_outcome, collapsed_seeds


# ----- the collapse test on hand-made tables ------------------------------------------------------------
def _tables(norms: dict[int, list[float]], loss: float, layers: int = 3, every: int = 10):
    """layers and steps tables of seeds whose grad_norm at each recorded step is the given value in every layer."""
    layer_rows, step_rows = [], []
    for seed, values in norms.items():
        for i, value in enumerate(values):
            layer_rows += [(seed, i * every, layer, "grad_norm", value) for layer in range(1, layers + 1)]
        step_rows += [(seed, s, loss) for s in range(len(values) * every)]
    layers_frame = pd.DataFrame(layer_rows, columns=["seed", "step", "layer", "stat", "value"])
    return layers_frame, pd.DataFrame(step_rows, columns=["seed", "step", "loss"])


def test_a_seed_with_no_gradient_and_chance_loss_has_collapsed_from_the_first_silent_step():
    silent = [1.0, 0.5, 0.0, 1e-40, 0.0, 0.0, 0.0, 0.0]  # 1e-40 is float32 underflow, as good as 0
    layers, steps = _tables({0: silent, 1: [1.0] * 8, 2: [0.0] * 8}, loss=math.log(10))
    assert collapsed_seeds(layers, steps, 10) == {0: 20, 2: 0}


@pytest.mark.parametrize(
    "norms, loss",
    [
        ([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], math.log(10)),  # silent for fewer than COLLAPSE_WINDOW steps
        ([0.0] * 6 + [1e-30], math.log(10)),  # a gradient at the end: still learning
        ([0.0] * 8, math.log(10) * (1 + 2 * COLLAPSE_TOLERANCE)),  # no gradient, but the loss is not at chance
    ],
)
def test_a_seed_that_still_learns_or_is_not_at_chance_has_not_collapsed(norms, loss):
    assert COLLAPSE_WINDOW == 5 and FLOAT32_TINY < 1e-37
    layers, steps = _tables({0: norms}, loss)
    assert collapsed_seeds(layers, steps, 10) == {}


def test_a_cell_is_ok_while_one_seed_is():
    assert cell_outcome([0, 1, 2], {0: 5}, {1: 10}) == "ok"
    assert cell_outcome([0, 1], {0: 5}, {1: 10}) == "collapsed"
    assert cell_outcome([0, 1], {0: 5, 1: 3}, {}) == "diverged"


# ----- a tiny net driven dead ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dead_study(tmp_path_factory):
    """ReLU with every bias at -5: no unit ever fires, so no hidden layer gets a gradient and the
    output stays a uniform guess. Beside it, the same net with zero biases, which trains."""
    from conftest import TINY, compose_config

    root = tmp_path_factory.mktemp("results")
    base = [*TINY, f"results_dir={root}", "study=dead", "act=relu", "init=he", "train.seeds=3", "stats=full"]
    run_cells([(compose_config(*base, bias), None) for bias in ("init.bias=-5", "init.bias=0")])
    return load_study(root / "dead")


def _dead_cell(study):
    return study.cells.set_index("init.bias").loc[-5.0]


@pytest.mark.slow
def test_a_dead_net_is_collapsed_in_meta_seeds_cells_and_tables(dead_study):
    dead, alive = _dead_cell(dead_study), dead_study.cells.set_index("init.bias").loc[0.0]
    assert dead["outcome"] == "collapsed" and dead["n_collapsed"] == 3 and dead["n_diverged"] == 0
    assert alive["outcome"] == "ok" and alive["n_collapsed"] == 0
    meta = json.loads((Path(dead["path"]) / "meta.json").read_text())
    assert meta["outcome"] == "collapsed" and meta["collapsed"] == {"0": 0, "1": 0, "2": 0}
    seeds = dead_study.seeds[dead_study.seeds["cell"] == dead["cell"]]
    assert (seeds["outcome"] == "collapsed").all() and (seeds["collapsed_at"] == 0).all()
    table = convergence_table(dead_study, target=0.5).set_index("init.bias")
    assert table.loc[-5.0, "outcome"] == "collapsed" and table.loc[-5.0, "n_healthy"] == 0
    assert table.loc[-5.0, "n_collapsed"] == 3 and pd.isna(table.loc[-5.0, "test_accuracy_mean"])
    assert table.loc[0.0, "n_healthy"] == 3


def test_a_ratio_of_exact_zeros_reads_zero_with_its_count(dead_study):
    grads = gradient_table(dead_study)
    dead = grads[(grads["init.bias"] == -5.0) & (grads["phase"] == "end")].iloc[0]
    assert dead["delta_std_ratio_gmean"] == 0 and dead["delta_std_ratio_n_zero"] == 3
    assert dead["grad_norm_ratio_gmean"] == 0 and dead["grad_norm_ratio_n_zero"] == 3


def test_the_summary_and_the_figures_show_the_collapse(dead_study, capsys):
    row = summary_table(dead_study).set_index("cell").loc[_dead_cell(dead_study)["cell"]]
    assert collapsed_text(row) == "collapsed 3/3 (from step 0)"
    print_summary(summary_table(dead_study))
    out = capsys.readouterr().out
    assert "collapsed 3/3" in out and "did not diverge or collapse" in out
    plot = learning_curves(dead_study)
    marks = [line for fig in plot.pages for ax in fig.axes for line in ax.lines if line.get_marker() == r"$\oslash$"]
    assert len(marks) == 2 * 3  # one per seed in each of the two rows of panels
    assert any("3 collapsed seed(s)" in note for note in plot.notes)
    legend = [t.get_text() for fig in plot.pages for legend in fig.legends for t in legend.get_texts()]
    assert any(text.startswith("a seed collapsed") for text in legend)
    plot.close()


# ----- intervals inside the range --------------------------------------------------------------------------
def test_fraction_intervals_are_the_logit_scale_t_interval():
    values = np.array([0.96, 0.99, 0.995, 0.93])
    mean, low, high, n = mean_ci(values, Summary.FRACTION)
    half = sps.t.ppf(0.975, 3) * values.std(ddof=1) / 2 / (values.mean() * (1 - values.mean()))
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(special.expit(special.logit(values.mean()) - half))
    assert high == pytest.approx(special.expit(special.logit(values.mean()) + half)) and high < 1
    assert mean_ci(values)[2] > 1  # the plain t interval leaves [0, 1] on these values


def test_positive_intervals_are_the_log_scale_t_interval_and_edges_stay_put():
    values = np.array([0.01, 2.3, 0.5])
    mean, low, high, _ = mean_ci(values, Summary.POSITIVE)
    factor = math.exp(sps.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3) / values.mean())
    assert (low, high) == pytest.approx((values.mean() / factor, values.mean() * factor))
    assert mean_ci(values)[1] < 0 < low
    for edge in (0.0, 1.0):
        assert bounded_interval(edge, 0.0, Summary.FRACTION) == (edge, edge)


def test_bands_and_table_intervals_stay_inside_the_range(dead_study):
    table = convergence_table(dead_study, target=0.5)
    for column in ("test_accuracy_low", "test_accuracy_high", "train_accuracy_low", "train_accuracy_high"):
        values = table[column].dropna()
        assert ((values >= 0) & (values <= 1)).all(), column
    assert (table["train_loss_low"].dropna() > 0).all()
    for plot in (learning_curves(dead_study), saturation_over_training(dead_study)):
        for fig in plot.pages:
            for ax in fig.axes:
                if "accuracy" in ax.get_ylabel() or "fraction" in ax.get_ylabel():
                    for band in ax.collections:
                        for path in band.get_paths():
                            y = path.vertices[:, 1]
                            assert (y >= 0).all() and (y <= 1).all()
        plot.close()
