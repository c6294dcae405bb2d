"""The TensorBoard export, read back with tbparse and compared with the Parquet tables."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from gradstudy import load_study
from gradstudy.export import main as export_main
from gradstudy.export import run_name
from gradstudy.run import run_cell
from gradstudy.show.encoding import study_keys

tbparse = pytest.importorskip("tbparse")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two full-tier cells, one whose seeds all diverge, and a third made corrupt; exported."""
    from conftest import TINY, compose_config

    root = tmp_path_factory.mktemp("results")
    base = [*TINY, f"results_dir={root}", "study=tb", "train.seeds=2", "stats=full", "act=tanh"]
    run_cell(compose_config(*base, "init=he"))
    run_cell(compose_config(*base, "init=normal", "init.sigma=3", "act=linear", "optim.lr=50"))
    corrupt = Path(run_cell(compose_config(*base, "init=lecun")))
    (corrupt / "steps.parquet").unlink()
    out = root / "tb_out"
    status = export_main(["tensorboard", str(root / "tb"), "--out", str(out)])
    return load_study(root / "tb"), out, status, corrupt.name


def _runs(study, out):
    keys = study_keys(study)
    for _, cell in study.cells[study.cells["status"] == "complete"].iterrows():
        for seed in sorted(study.seeds.loc[study.seeds["cell"] == cell["cell"], "seed"]):
            reader = tbparse.SummaryReader(str(out / run_name(cell, keys, int(seed))), extra_columns={"dir_name"})
            yield cell, int(seed), reader


@pytest.mark.slow
def test_scalars_equal_the_parquet_tables(exported):
    study, out, _, _ = exported
    checked = 0
    for cell, seed, reader in _runs(study, out):
        scalars = reader.scalars[reader.scalars["dir_name"] == ""].set_index(["tag", "step"])["value"]
        mine = lambda table: table[(table["cell"] == cell["cell"]) & (table["seed"] == seed)]  # noqa: E731
        for r in mine(study.curves).itertuples():
            assert scalars[(f"{r.split}/{r.metric}", r.step)] == np.float32(r.value)
        for r in mine(study.steps).itertuples():
            assert scalars[("minibatch/loss", r.step)] == np.float32(r.loss)
            assert scalars[("minibatch/lr", r.step)] == np.float32(r.lr)
        layers = mine(study.layers)
        for r in layers.itertuples():
            assert scalars[(f"layer_{r.layer:02d}/{r.stat}", r.step)] == np.float32(r.value)
        assert len(scalars) == len(mine(study.curves)) + 2 * len(mine(study.steps)) + len(layers)
        checked += 1
    assert checked == 4


@pytest.mark.slow
def test_histograms_config_and_hparams_come_along(exported):
    study, out, _, _ = exported
    for cell, seed, reader in _runs(study, out):
        hists = study.hists[(study.hists["cell"] == cell["cell"]) & (study.hists["seed"] == seed)]
        bins = hists[hists["region"] == "bin"]
        read = reader.histograms.set_index(["tag", "step"])
        for (step, layer, quantity), h in bins.groupby(["step", "layer", "quantity"]):
            if h["count"].sum() == 0:
                continue
            counts = read.loc[(f"layer_{layer:02d}/{quantity}", step), "counts"]
            np.testing.assert_array_equal(counts, h.sort_values("bin_left")["count"].to_numpy())
        assert "init:" in reader.text.set_index("tag").loc["config", "value"]
        hparams = reader.hparams.set_index("tag")["value"]
        assert hparams["cell"] == cell["cell"] and int(hparams["seed"]) == seed
        finals = reader.scalars[reader.scalars["dir_name"] == "hparams"].set_index("tag")["value"]
        last = study.curves[(study.curves["cell"] == cell["cell"]) & (study.curves["seed"] == seed)]
        last = last[(last["split"] == "test") & (last["metric"] == "accuracy")].sort_values("step")["value"].iloc[-1]
        assert finals["final/test_accuracy"] == np.float32(last)


def test_diverged_seeds_end_at_their_last_healthy_step(exported):
    study, out, _, _ = exported
    diverged = study.seeds.dropna(subset=["diverged_at"])
    assert len(diverged) == 2
    for cell, seed, reader in _runs(study, out):
        row = study.seeds[(study.seeds["cell"] == cell["cell"]) & (study.seeds["seed"] == seed)].iloc[0]
        assert reader.scalars["step"].max() <= row["last_healthy_step"]


def test_a_corrupt_cell_is_named_and_the_rest_exported(exported, capsys, tmp_path):
    study, out, status, corrupt = exported
    assert status == 1
    assert corrupt not in {c for c in study.cells.loc[study.cells["status"] == "complete", "cell"]}
    assert export_main(["tensorboard", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "holds no gradstudy cells" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
