"""Cell folders: ids, atomic writes, resume, divergence rows, and ``load_study``'s schema."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY, compose_config

from gradstudy import load_study
from gradstudy.cells.config import canonical, resolved
from gradstudy.cells.statistics import stat_names
from gradstudy.run import run_cell
from gradstudy.schema import CellStatus
from gradstudy.store.files import write_json, write_table
from gradstudy.store.ids import cell_id
from gradstudy.store.state import cell_state


@pytest.fixture
def cell_cfg(tiny_cfg, tmp_path):
    return lambda *overrides: tiny_cfg(f"results_dir={tmp_path}", "study=s1", "train.seeds=3", *overrides)


def test_cell_id_is_a_readable_slug_plus_config_hash(cell_cfg, tmp_path):
    cfg = cell_cfg()
    cid = cell_id(canonical(resolved(cfg)))
    assert cid.startswith("xavier-relu-none-digits-d3w16-sgd-") and len(cid.split("-")[-1]) == 10
    assert cell_id(canonical(resolved(cell_cfg("study=other", "force=true", "results_dir=/elsewhere")))) == cid
    assert cell_id(canonical(resolved(cell_cfg("init.scale=2")))) != cid


def test_complete_cell_and_study_schema(cell_cfg, tmp_path):
    cell_dir = run_cell(cell_cfg())
    assert cell_state(cell_dir).status == CellStatus.COMPLETE
    names = sorted(os.listdir(cell_dir))
    assert names == [
        "config.yaml",
        "curves.parquet",
        "hists.parquet",
        "layers.parquet",
        "meta.json",
        "seeds.parquet",
        "steps.parquet",
    ]
    meta = json.loads(Path(os.path.join(cell_dir, "meta.json")).read_text())
    assert meta["seeds"] == [0, 1, 2] and meta["diverged"] == {} and meta["outcome"] == "ok"
    assert {"versions", "git_hash", "code_hash", "device", "config"} <= set(meta)

    run_cell(cell_cfg("init=he", "init.scale=1.5"))
    for path in (tmp_path / "s1", tmp_path):  # a study folder or a folder of studies
        study = load_study(path)
        assert len(study.cells) == 2
        cells = study.cells.set_index("init")
        assert {
            "study",
            "cell",
            "act",
            "norm",
            "data",
            "optim",
            "model.depth",
            "model.width",
            "init.scale",
            "optim.lr",
            "train.batch_size",
            "status",
            "n_seeds",
            "n_diverged",
        } <= set(study.cells.columns)
        assert cells.loc["he", "init.scale"] == 1.5 and cells.loc["xavier", "model.depth"] == 3
        assert (study.cells["status"] == "complete").all() and (study.cells["n_seeds"] == 3).all()
    curves, layers = study.curves, study.layers
    assert list(curves.columns) == ["study", "cell", "seed", "step", "split", "metric", "value"]
    assert list(layers.columns) == ["study", "cell", "seed", "step", "layer", "stat", "value"]
    assert set(curves["split"]) == {"train", "test"} and set(curves["metric"]) == {"loss", "accuracy"}
    assert sorted(curves["step"].unique()) == [0, 10, 20, 30]
    # relu: dead units, no flat region, no learned slope
    assert set(layers["stat"]) == set(stat_names("scalars")) - {"saturated_frac", "prelu_alpha"}
    assert np.isfinite(layers["value"]).all() and np.isfinite(curves["value"]).all()
    steps = study.steps
    assert list(steps.columns) == ["study", "cell", "seed", "step", "loss", "lr"] and steps["loss"].dtype == np.float32
    assert steps["lr"].dtype == np.float32 and (steps["lr"] == np.float32(0.1)).all()  # TINY's constant rate
    assert len(steps) == 2 * 3 * 30 and sorted(steps["step"].unique()) == list(range(30))
    assert list(study.seeds.columns) == [
        "study",
        "cell",
        "seed",
        "diverged_at",
        "last_healthy_step",
        "collapsed_at",
        "outcome",
    ]
    assert study.seeds["diverged_at"].isna().all() and (study.seeds["last_healthy_step"] == 30).all()
    assert sorted(layers["layer"].unique()) == [1, 2, 3]
    assert sorted(layers["step"].unique()) == [0, 5, 10, 15, 20, 25]
    assert (study.curves["study"] == "s1").all()
    assert study.hists.empty  # below the full tier
    assert list(study.hists.columns) == [
        "study",
        "cell",
        "seed",
        "step",
        "layer",
        "quantity",
        "region",
        "bin_left",
        "bin_right",
        "count",
    ]


@pytest.mark.slow
def test_full_tier_records_percentiles_and_histograms(cell_cfg):
    cfg = cell_cfg("stats=full", "act=tanh")
    study = load_study(os.path.dirname(run_cell(cfg)))
    assert {"z_p15", "z_p50", "z_p85"} <= set(study.layers["stat"])
    p = study.layers.pivot_table(index=["seed", "step", "layer"], columns="stat", values="value")
    assert ((p["z_p15"] <= p["z_p50"]) & (p["z_p50"] <= p["z_p85"])).all()
    hists = study.hists
    assert sorted(hists["step"].unique()) == [0, 30] and set(hists["quantity"]) == {"activation", "delta"}
    totals = hists.groupby(["seed", "step", "layer", "quantity"])["count"].sum()  # bins and regions together
    assert (totals == cfg.train.batch_size * cfg.model.width).all()
    bins = hists[hists["region"] == "bin"]
    assert (bins["bin_right"] > bins["bin_left"]).all()
    assert set(hists["region"]) == {"bin", "zero", "below", "above", "nonfinite"}
    act = bins[bins["quantity"] == "activation"]
    assert act["bin_left"].min() == -1 and act["bin_right"].max() == 1  # tanh: linear bins over its range
    assert act.groupby(["seed", "step", "layer"]).size().eq(cfg.stats.hist_bins).all()
    delta = bins[bins["quantity"] == "delta"]  # signed-log bins: hist_bins per sign over hist_range
    assert delta.groupby(["seed", "step", "layer"]).size().eq(2 * cfg.stats.hist_bins).all()
    assert delta["bin_right"].max() == pytest.approx(1e3, rel=1e-6) and delta["bin_left"].min() == pytest.approx(
        -1e3, rel=1e-6
    )


@pytest.mark.slow
def test_diverged_seed_writes_no_rows_after_its_step(cell_cfg):
    cfg = cell_cfg(
        "init=normal", "init.sigma=3", "act=linear", "optim.lr=5", "train.steps=60", "train.eval_every=20", "stats=full"
    )
    cell_dir = run_cell(cfg)
    meta = json.loads(Path(os.path.join(cell_dir, "meta.json")).read_text())
    assert meta["status"] == "complete" and meta["diverged"]
    study = load_study(os.path.dirname(cell_dir))
    assert study.cells["n_diverged"].iloc[0] == len(meta["diverged"])
    seeds = study.seeds.set_index("seed")
    for seed, step in meta["diverged"].items():
        assert seeds.loc[int(seed), "diverged_at"] == step and seeds.loc[int(seed), "last_healthy_step"] == step
        for table in (study.curves, study.layers, study.steps, study.hists):
            rows = table[table["seed"] == int(seed)]
            assert rows["step"].max() <= step
        # the frozen state is evaluated once, at the last healthy step, whatever eval_every says
        assert study.curves.loc[study.curves["seed"] == int(seed), "step"].max() == step
    for table, column in ((study.curves, "value"), (study.layers, "value"), (study.steps, "loss")):
        assert np.isfinite(table[column]).all()


def test_failed_cell_is_recorded_not_raised(cell_cfg):
    cell_dir = run_cell(cell_cfg("model.depth=0"))
    meta = json.loads(Path(os.path.join(cell_dir, "meta.json")).read_text())
    assert meta["status"] == "failed" and meta["message"].startswith("model.depth:")
    assert load_study(os.path.dirname(cell_dir)).cells["status"].tolist() == ["failed"]


def test_resume_skips_complete_cells_and_force_reruns(cell_cfg):
    cell_dir = run_cell(cell_cfg())
    meta_path = os.path.join(cell_dir, "meta.json")
    before = os.stat(meta_path).st_mtime_ns
    run_cell(cell_cfg())
    assert os.stat(meta_path).st_mtime_ns == before
    run_cell(cell_cfg("force=true"))
    assert os.stat(meta_path).st_mtime_ns != before


def test_interrupted_cell_is_not_complete_and_reruns(cell_cfg):
    cell_dir = run_cell(cell_cfg())
    meta_path = os.path.join(cell_dir, "meta.json")
    meta = json.loads(Path(meta_path).read_text())
    write_json(Path(meta_path), {**meta, "status": "running"})
    assert cell_state(cell_dir).status != CellStatus.COMPLETE
    assert load_study(os.path.dirname(cell_dir)).curves.empty
    run_cell(cell_cfg())
    assert cell_state(cell_dir).status == CellStatus.COMPLETE


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    class Boom(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            Path(args[0]).write_text("partial")
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_table(tmp_path / "t.parquet", Boom({"a": [1]}))
    assert list(tmp_path.iterdir()) == []
    write_table(tmp_path / "t.parquet", pd.DataFrame({"a": np.arange(3)}))
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_load_study_on_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_study(tmp_path / "nope")
    study = load_study(tmp_path)
    assert study.cells.empty and study.curves.empty and "cell" in study.layers.columns


@pytest.mark.slow
def test_a_skipped_cell_made_by_other_code_says_so_and_the_report_flags_the_mix(cell_cfg, tmp_path, capsys):
    from gradstudy.report import write_report
    from gradstudy.store.provenance import code_hash

    cell_dir = Path(run_cell(cell_cfg()))
    run_cell(cell_cfg("init=he"))
    meta = json.loads((cell_dir / "meta.json").read_text())
    assert meta["code_hash"] == code_hash() and len(code_hash()) == 12
    capsys.readouterr()
    run_cell(cell_cfg())
    assert "made by other code" not in capsys.readouterr().err
    write_json(cell_dir / "meta.json", {**meta, "code_hash": "0123456789ab"})
    run_cell(cell_cfg())
    err = capsys.readouterr().err
    assert "is complete, skipped" in err and "made by other code (code_hash 0123456789ab" in err
    assert load_study(tmp_path / "s1").cells["code_hash"].nunique() == 2
    text = write_report(tmp_path / "s1", tmp_path / "out").read_text()
    assert "mixes cells made by different code" in text and "0123456789ab" in text


def test_config_yaml_is_the_canonical_config_that_the_id_hashes(cell_cfg):
    from gradstudy.store.ids import config_hash

    cell_dir = Path(run_cell(cell_cfg("optim.momentum=0.5")))  # sgd ignores momentum
    config = yaml.safe_load((cell_dir / "config.yaml").read_text())
    assert "momentum" not in config["optim"] and "alpha" not in config["act"]
    assert cell_dir.name.endswith(config_hash(config))
    meta = json.loads((cell_dir / "meta.json").read_text())
    assert meta["config"]["optim"]["momentum"] == 0.5  # the full resolved config, for provenance


def test_a_cell_written_before_seeds_parquet_gets_its_seeds_from_meta(cell_cfg):
    from gradstudy.analysis.convergence import final_metrics

    cell_dir = Path(run_cell(cell_cfg("init=normal", "init.sigma=3", "act=linear", "optim.lr=5", "train.steps=60")))
    expected = load_study(cell_dir.parent).seeds
    (cell_dir / "seeds.parquet").unlink()
    meta = json.loads((cell_dir / "meta.json").read_text())
    del meta["tables"]  # written before its tables were listed
    (cell_dir / "meta.json").write_text(json.dumps(meta))
    study = load_study(cell_dir.parent)
    pd.testing.assert_frame_equal(study.seeds, expected, check_dtype=False)
    healthy = set(expected.loc[expected["diverged_at"].isna(), "seed"])
    assert set(final_metrics(study)["seed"]) == healthy


@pytest.mark.slow
def test_meta_records_the_machine_and_a_report_on_two_machines_says_so(cell_cfg, tmp_path):
    """Two studies of the same cell, one of them made on another processor (its meta.json edited as
    a colleague's machine would have written it): the report on both says their numbers are not
    bitwise comparable and names each machine."""
    from gradstudy.report import write_report
    from gradstudy.store.provenance import machine_fingerprint

    mine = Path(run_cell(cell_cfg()))
    theirs = Path(run_cell(cell_cfg("study=s2")))
    meta = json.loads((mine / "meta.json").read_text())
    assert {"processor", "architecture", "isa", "xla_flags"} <= set(meta["machine"])
    assert "platform_version" in meta["device"] and meta["device"]["platform"] == "cpu"
    assert "xla_force_host_platform_device_count" not in machine_fingerprint(meta)  # the count changes no number
    alone = write_report(tmp_path / "s1", tmp_path / "alone").read_text()
    assert "different machines" not in alone
    other = json.loads((theirs / "meta.json").read_text())
    other["machine"] = {**other["machine"], "processor": "Another CPU 9000", "isa": ["avx2", "fma"]}
    write_json(theirs / "meta.json", other)
    both = write_report([tmp_path / "s1", tmp_path / "s2"], tmp_path / "both").read_text()
    assert "made on different machines or builds" in both
    assert "Another CPU 9000; avx2+fma" in both and meta["machine"]["processor"] in both


@pytest.mark.slow
def test_a_key_null_in_some_cells_varies_and_is_drawn_as_null(tmp_path):
    from gradstudy.show import plots

    for clip in ("null", "1.0"):
        run_cell(compose_config(*TINY, f"optim.clip_norm={clip}", f"results_dir={tmp_path}", "study=s"))
    study = load_study(tmp_path / "s")
    assert study.varying_keys == ["optim.clip_norm"]
    plot = plots.learning_curves(study)
    labels = [t.get_text() for t in plot.pages[0].legends[0].get_texts()]
    assert "1" in labels and "null" in labels
    plot.close()


def test_steps_written_before_the_lr_column_read_with_the_cell_s_rate(tmp_path):
    from gradstudy.schema import META, STEPS
    from gradstudy.store.files import table_record

    cell = Path(run_cell(compose_config(*TINY, "optim.lr=0.07", f"results_dir={tmp_path}", "study=s")))
    old = pd.read_parquet(cell / STEPS).drop(columns="lr")
    write_table(cell / STEPS, old)
    meta = json.loads((cell / META).read_text())
    meta["tables"][STEPS] = table_record(cell / STEPS)
    write_json(cell / META, meta)
    study = load_study(tmp_path / "s")
    assert study.cells["status"].tolist() == [CellStatus.COMPLETE]
    assert len(study.steps) == len(old) and (study.steps["lr"] == np.float32(0.07)).all()
