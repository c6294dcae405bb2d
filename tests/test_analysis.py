"""Analysis functions on hand-made tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gradstudy.analysis.convergence import compare_cells, convergence_table, loss_auc, steps_to_target
from gradstudy.analysis.profiles import gradient_table
from gradstudy.analysis.seeds import bootstrap_median_ci, lower_median, mean_ci
from gradstudy.cells.statistics import Summary
from gradstudy.store.study import Study


def _curves(cell, seed, accs, losses, steps=(0, 10, 20, 30)):
    rows = []
    for step, acc, loss in zip(steps, accs, losses, strict=True):
        for split in ("train", "test"):
            rows += [(cell, seed, step, split, "accuracy", acc), (cell, seed, step, split, "loss", loss)]
    return rows


def _study():
    rows = []
    # cell "a": seeds reach 0.9 at steps 10, 20, 30 -> lower median 20
    rows += _curves("a", 0, [0.1, 0.9, 0.95, 0.96], [2, 1, 0.5, 0.4])
    rows += _curves("a", 1, [0.1, 0.5, 0.9, 0.95], [2, 1.5, 1, 0.5])
    rows += _curves("a", 2, [0.1, 0.5, 0.6, 0.92], [2, 1.5, 1.2, 1])
    # cell "b": one seed reaches at 30, one never (censored), one diverged at step 10 before reaching
    rows += _curves("b", 0, [0.1, 0.5, 0.6, 0.91], [2, 1.8, 1.6, 1.4])
    rows += _curves("b", 1, [0.1, 0.3, 0.4, 0.5], [2, 1.9, 1.8, 1.7])
    rows += _curves("b", 2, [0.1, 0.2], [2, 1.9], steps=(0, 10))
    curves = pd.DataFrame(rows, columns=["cell", "seed", "step", "split", "metric", "value"]).assign(study="s")
    cells = pd.DataFrame(
        {
            "study": "s",
            "cell": ["a", "b"],
            "status": "complete",
            "outcome": "ok",
            "n_seeds": 3,
            "n_diverged": [0, 1],
            "optim.lr": [0.1, 0.01],
        }
    )
    seeds = pd.DataFrame(
        {
            "study": "s",
            "cell": ["a"] * 3 + ["b"] * 3,
            "seed": [0, 1, 2] * 2,
            "diverged_at": pd.array([None] * 5 + [10], dtype="Int64"),
            "last_healthy_step": [30] * 5 + [10],
        }
    )
    layers = []
    for cell, factor in (("a", 1.0), ("b", 0.5)):
        for seed in range(3):
            for step in (0, 20):
                for layer in (1, 2, 3):
                    g = factor ** (3 - layer) * (1 + seed)  # b: shrinks by half per layer downwards
                    layers += [
                        (cell, seed, step, layer, "grad_norm", g),
                        (cell, seed, step, layer, "delta_std", 2 * g),
                        (cell, seed, step, layer, "saturated_frac", np.nan),
                        (cell, seed, step, layer, "dead_frac", 0.1 * layer),
                    ]
    layers = pd.DataFrame(layers, columns=["cell", "seed", "step", "layer", "stat", "value"]).assign(study="s")
    return Study(cells=cells, curves=curves, layers=layers, hists=pd.DataFrame(), seeds=seeds, steps=pd.DataFrame())


def test_mean_ci_is_the_t_interval():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    mean, low, high, n = mean_ci(x)
    half = sps.t.ppf(0.975, 3) * x.std(ddof=1) / 2
    assert (mean, n) == (3.5, 4) and low == pytest.approx(3.5 - half) and high == pytest.approx(3.5 + half)
    assert np.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert mean_ci([np.nan, 1.0, 3.0])[3] == 2


def test_lower_median_counts_censored_seeds_as_not_reached():
    assert lower_median(np.array([10, 20, 30.0])) == 20
    assert lower_median(np.array([10, np.inf, 30, np.inf])) == 30  # half reach: finite
    assert lower_median(np.array([10, np.inf, np.inf])) == np.inf  # fewer than half reach
    low, high = bootstrap_median_ci(np.array([10, 20, 30.0]))
    assert 10 <= low <= 20 <= high <= 30
    assert bootstrap_median_ci(np.array([10, 20, 30.0])) == (low, high)  # fixed rng seed
    assert np.isnan(bootstrap_median_ci(np.array([10.0]))[0])


def test_steps_to_target_with_censored_and_diverged_seeds():
    t = steps_to_target(_study().curves, 0.9).set_index(["cell", "seed"])
    assert t.loc[("a", 0), "step"] == 10 and t.loc[("a", 2), "step"] == 30
    assert t.loc[("b", 1), "step"] == np.inf and not t.loc[("b", 1), "reached"]
    assert t.loc[("b", 2), "step"] == np.inf and t.loc[("b", 2), "last_step"] == 10  # diverged first
    loss = steps_to_target(_study().curves, 1.0, metric="loss", split="train").set_index(["cell", "seed"])
    assert loss.loc[("a", 0), "step"] == 10 and loss.loc[("b", 0), "step"] == np.inf


def test_convergence_table():
    table = convergence_table(_study(), 0.9)
    assert list(table.columns[:3]) == ["optim.lr", "study", "cell"]  # varying keys first, sorted by them
    assert table["optim.lr"].tolist() == [0.01, 0.1]
    table = table.set_index("cell")
    assert table.loc["a", "steps_to_target"] == 20 and table.loc["a", "reached"]
    assert table.loc["a", "n_reached"] == 3 and table.loc["a", "n_healthy"] == 3
    # b: over its two healthy seeds, one reaches at 30 and one never: the lower median is 30
    assert table.loc["b", "steps_to_target"] == 30 and table.loc["b", "reached"]
    assert table.loc["b", "n_reached"] == 1 and table.loc["b", "n_healthy"] == 2 and table.loc["b", "n_diverged"] == 1
    # final metrics leave the diverged seed out: b's test accuracy is the mean of 0.91 and 0.5
    assert table.loc["b", "test_accuracy_mean"] == pytest.approx(0.705) and table.loc["b", "test_accuracy_n"] == 2
    # accuracies get the t interval on the logit scale (it stays inside [0, 1]), losses on the log scale
    mean, low, high, _ = mean_ci([0.96, 0.95, 0.92], Summary.FRACTION)
    assert table.loc["a", "test_accuracy_mean"] == pytest.approx(mean)
    assert table.loc["a", "test_accuracy_low"] == pytest.approx(low)
    assert table.loc["a", "test_accuracy_high"] == pytest.approx(high) and high < 1
    assert table.loc["a", "test_loss_low"] == pytest.approx(mean_ci([0.4, 0.5, 1.0], Summary.POSITIVE)[1])
    # train loss AUC: seed 0 of a is trapezoid of [2, 1, 0.5, 0.4] over steps 0..30
    assert loss_auc(_study()).set_index(["cell", "seed"]).loc[("a", 0), "train_loss_auc"] == pytest.approx(
        10 * (1.5 + 0.75 + 0.45)
    )
    assert table.loc["b", "train_loss_auc_n"] == 2


def test_gradient_table_ratios_and_phases():
    table = gradient_table(_study())
    # b's seed 2 diverged at step 10: its last healthy step is the phase "early", apart from "end"
    assert set(table["phase"]) == {"start", "end", "early"}
    assert set(table.loc[table["phase"] == "early", "cell"]) == {"b"}
    assert (table.loc[table["cell"] == "b", "n_ended_early"] == 1).all()
    assert list(dict.fromkeys(table.loc[table["cell"] == "b", "phase"])) == ["start", "end", "early"]
    a = table[(table["cell"] == "a") & (table["phase"] == "start")].set_index("layer")
    b = table[(table["cell"] == "b") & (table["phase"] == "end")].set_index("layer")
    assert a.loc[1, "grad_norm_gmean"] == pytest.approx(6 ** (1 / 3))  # geometric mean of 1, 2, 3
    assert a.loc[1, "grad_norm_low"] > 0 and a.loc[1, "grad_norm_n_zero"] == 0
    assert a.loc[1, "grad_norm_ratio_gmean"] == pytest.approx(1.0)
    assert b.loc[1, "grad_norm_ratio_gmean"] == pytest.approx(0.25) and b.loc[
        1, "delta_std_ratio_gmean"
    ] == pytest.approx(0.25)
    assert b.loc[2, "dead_frac"] == pytest.approx(0.2) and np.isnan(b.loc[2, "saturated_frac"])
    assert b.loc[1, "step"] == 20


def test_compare_cells_gives_a_difference_with_ci():
    study = _study()
    result = compare_cells(study, "a", "b", 0.9)
    assert (
        result["difference"] == -np.inf
    )  # b never reaches (by its lower median; the diverged seed counts as not reaching)
    result = compare_cells(study, "a", "a", 0.9)
    assert result["difference"] == 0 and result["low"] <= 0 <= result["high"]
    with pytest.raises(KeyError):
        compare_cells(study, "a", "zzz", 0.9)


def test_log_mean_ci_is_the_t_interval_of_the_logs_and_counts_zeros():
    from gradstudy.analysis.seeds import log_mean_ci

    x = np.array([0.01, 1.0, 100.0, 5.0])
    gmean, low, high, n, n_zero = log_mean_ci(x)
    mean, lo, hi, _ = mean_ci(np.log(x))
    assert gmean == pytest.approx(np.exp(mean)) and (low, high) == pytest.approx((np.exp(lo), np.exp(hi)))
    assert 0 < low < gmean < high and (n, n_zero) == (4, 0)
    assert mean_ci(x)[1] < 0  # the linear interval of the same values goes negative
    gmean, low, high, n, n_zero = log_mean_ci([0.0, 0.0, 2.0, 8.0])
    assert gmean == pytest.approx(4.0) and (n, n_zero) == (4, 2)
    gmean, low, high, n, n_zero = log_mean_ci([0.0, 0.0, 0.0])
    assert gmean == 0 and np.isnan(low) and (n, n_zero) == (3, 3)  # underflow everywhere: shown as 0, not dropped


def test_steps_to_target_on_the_minibatch_loss_resolves_to_one_step():
    study = _study()
    steps = pd.DataFrame(
        [("s", "a", seed, step, 2.0 - 0.1 * step * (seed + 1)) for seed in range(3) for step in range(12)],
        columns=["study", "cell", "seed", "step", "loss"],
    )
    study = Study(
        cells=study.cells[study.cells["cell"] == "a"],
        curves=study.curves,
        layers=study.layers,
        hists=study.hists,
        seeds=study.seeds,
        steps=steps,
    )
    table = convergence_table(study, target=1.0, metric="loss", split="minibatch").set_index("cell")
    # seed s reaches loss <= 1.0 at the first step >= 10 / (s + 1): steps 10, 5, 4 -> lower median 5
    assert table.loc["a", "steps_to_target"] == 5 and table.loc["a", "n_reached"] == 3
