"""Divergence as data, end to end: an LR sweep in which some seeds diverge and one cell diverges
completely, analysed, summarized and reported; and two studies that share a config, analysed together."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import LRS

from gradstudy import load_study
from gradstudy.analysis.convergence import convergence_table, final_metrics, loss_auc
from gradstudy.analysis.profiles import gradient_table
from gradstudy.report import write_report
from gradstudy.run import run_cells
from gradstudy.show.encoding import study_keys
from gradstudy.show.summary import diverged_text, summary_table


@pytest.mark.slow
def test_lr_sweep_records_divergence_as_data(lr_study):
    study = load_study(lr_study)
    cells = study.cells.set_index("optim.lr")
    assert cells.loc[0.005, "n_diverged"] == 0 and cells.loc[0.005, "outcome"] == "ok"
    assert 0 < cells.loc[0.07, "n_diverged"] < 4 and cells.loc[0.07, "outcome"] == "ok"
    assert cells.loc[50.0, "n_diverged"] == 4 and cells.loc[50.0, "outcome"] == "diverged"
    assert (study.cells["status"] == "complete").all()
    meta = json.loads((Path(cells.loc[50.0, "path"]) / "meta.json").read_text())
    assert meta["outcome"] == "diverged" and meta["status"] == "complete"

    # no inf anywhere, no NaN in any value column
    for table, column in ((study.curves, "value"), (study.layers, "value"), (study.steps, "loss")):
        assert np.isfinite(table[column].to_numpy(np.float64)).all()
    assert not np.isinf(study.hists[["bin_left", "bin_right"]].to_numpy(np.float64)).any()
    assert study.hists.loc[study.hists["region"] == "bin", ["bin_left", "bin_right"]].notna().all().all()
    # dead_frac is about ReLU, saturated_frac about bounded activations: neither is stored for a linear net
    assert not study.layers["stat"].isin(["dead_frac", "saturated_frac"]).any()

    # the exact step: the minibatch loss is recorded at every step up to it, the frozen state evaluated at it
    seeds = study.seeds.merge(study.cells[["study", "cell", "optim.lr"]], on=["study", "cell"])
    diverged = seeds.dropna(subset=["diverged_at"])
    assert len(diverged) >= 5
    for row in diverged.itertuples():
        steps = study.steps[(study.steps["cell"] == row.cell) & (study.steps["seed"] == row.seed)]["step"]
        assert steps.max() <= row.diverged_at and (steps.max() == row.diverged_at or steps.max() == row.diverged_at - 1)
        assert list(steps) == list(range(len(steps)))
        curves = study.curves[(study.curves["cell"] == row.cell) & (study.curves["seed"] == row.seed)]
        assert curves["step"].max() <= row.diverged_at == row.last_healthy_step
        for table in (study.layers, study.hists):
            assert table[(table["cell"] == row.cell) & (table["seed"] == row.seed)]["step"].max() <= row.diverged_at
    # step 0 is measured for every seed, even one that diverged at its first update
    assert study.layers[study.layers["step"] == 0].groupby(["cell", "seed"]).ngroups == 12


@pytest.mark.slow
def test_no_diverged_seed_reaches_a_final_metric(lr_study):
    study = load_study(lr_study)
    healthy = study.seeds.loc[study.seeds["diverged_at"].isna(), ["cell", "seed"]]
    for frame in (final_metrics(study), loss_auc(study)):
        assert set(zip(frame["cell"], frame["seed"], strict=True)) <= set(
            zip(healthy["cell"], healthy["seed"], strict=True)
        )
    table = convergence_table(study, target=0.5).set_index("optim.lr")
    assert table.index.tolist() == list(LRS)  # sorted by the varying key, numerically
    assert pd.isna(table.loc[50.0, "test_accuracy_mean"]) and table.loc[50.0, "test_accuracy_n"] == 0
    assert table.loc[50.0, "outcome"] == "diverged" and table.loc[50.0, "n_healthy"] == 0
    assert pd.isna(table.loc[50.0, "train_loss_auc_mean"])
    partial = table.loc[0.07]
    assert partial["test_accuracy_n"] == partial["n_healthy"] == 4 - partial["n_diverged"]
    grads = gradient_table(study)
    # "end" pools the seeds that trained to the last step; each diverged seed's last healthy step is
    # "early", never pooled with them
    phases = grads.drop_duplicates(["cell", "phase"]).set_index(["optim.lr", "phase"])
    assert (50.0, "end") not in phases.index and (0.005, "early") not in phases.index
    assert phases.loc[(50.0, "early"), "n_ended_early"] == 4 and phases.loc[(50.0, "early"), "step"] < 35
    assert phases.loc[(0.005, "end"), "n_ended_early"] == 0 and phases.loc[(0.005, "end"), "step"] == 35
    partial = cells_diverged(study, 0.07)
    assert phases.loc[(0.07, "end"), "n_ended_early"] == partial and phases.loc[(0.07, "end"), "step"] == 35
    assert phases.loc[(0.07, "early"), "step"] < 35
    assert (grads["grad_norm_low"].dropna() > 0).all()  # log-scale intervals never go negative


def cells_diverged(study, lr: float) -> int:
    return int(study.cells.set_index("optim.lr").loc[lr, "n_diverged"])


@pytest.mark.slow
def test_summary_and_report_show_divergence(lr_study, tmp_path):
    study = load_study(lr_study)
    table = summary_table(study).merge(study.cells[["cell", "optim.lr"]], on="cell").set_index("optim.lr")
    assert pd.isna(table.loc[50.0, "acc_mean"])
    first, last = table.loc[50.0, "diverged_steps"]
    assert (
        diverged_text(table.loc[50.0])
        == f"diverged 4/4 ({f'steps {first}–{last}' if first != last else f'step {first}'})"
    )
    assert diverged_text(table.loc[0.005]) == "0/4"
    report = write_report(lr_study, tmp_path / "out")
    text = report.read_text()
    assert "| optim.lr |" in text and "diverged" in text
    assert (tmp_path / "out" / "figures" / "grad_norm_heatmap.png").is_file()


@pytest.mark.slow
def test_two_studies_that_share_a_config_are_analysed_together(tmp_path):
    from conftest import TINY, compose_config

    run_cells(
        [
            (compose_config(*TINY, f"init={init}", "train.seeds=2", f"results_dir={tmp_path}", f"study={study}"), None)
            for study in ("first", "second")
            for init in ("xavier", "he")
        ]
    )
    both = load_study([tmp_path / "first", tmp_path / "second"])
    assert len(both.cells) == 4 and both.cells["cell"].nunique() == 2
    assert both.varying_keys == ["init"]
    assert study_keys(both) == ["study", "init"]  # figures tell the studies apart when several are loaded
    grads = gradient_table(both)
    assert grads.groupby(["study", "cell", "phase"]).ngroups == 8
    conv = convergence_table(both, target=0.5)
    assert len(conv) == 4 and list(conv.columns[:3]) == ["init", "study", "cell"]
    # the same config and seeds give the same numbers in both studies
    a, b = (conv[conv["study"] == s].set_index("init") for s in ("first", "second"))
    assert a["test_accuracy_mean"].equals(b["test_accuracy_mean"])
    assert load_study(tmp_path).cells.shape[0] == 4  # a folder of studies reads the same
