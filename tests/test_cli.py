"""The command line as a user runs it: a sweep with a bad cell, resume, and bad names."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from gradstudy import load_study


@pytest.mark.slow
def test_sweep_survives_a_bad_cell_prints_summary_and_resumes(tmp_path):
    args = ["-m", *TINY, "train.seeds=2", "model.depth=0,2"]
    first = run_cli(args, tmp_path)
    assert first.returncode != 0  # one cell failed
    assert "Traceback" not in first.stderr
    assert "model.depth: must be >= 1 hidden layer, got 0" in first.stderr
    assert "gradstudy summary" in first.stdout and "complete" in first.stdout and "failed" in first.stdout
    cells = load_study(tmp_path / "results" / "default").cells.set_index("model.depth")
    assert cells.loc[2, "status"] == "complete" and cells.loc[0, "status"] == "failed"
    assert not (tmp_path / "results" / "default" / "multirun").exists()

    second = run_cli(args, tmp_path)
    assert "is complete, skipped" in second.stderr
    assert second.stdout.count("complete") == first.stdout.count("complete")


def test_single_run_succeeds_with_exit_zero(tmp_path):
    done = run_cli([*TINY, "train.seeds=[3]", "study=one"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    study = load_study(tmp_path / "results" / "one")
    assert study.cells["status"].tolist() == ["complete"] and set(study.curves["seed"]) == {3}


def test_unknown_initializer_lists_the_valid_names(tmp_path):
    bad = run_cli(["init=glorot_magic"], tmp_path)
    assert bad.returncode != 0
    assert "Available options" in bad.stderr and "he_uniform" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_entry_point_imports_no_jax_and_warnings_no_scipy():
    """Hydra imports the entry point and the sweeper plugin before any job starts, and planning a
    sweep composes every cell: neither imports jax, flax, optax, scikit-learn or scipy. The
    compatibility warnings load scipy only when a rule fires."""
    code = (
        "import sys\n"
        "import gradstudy.run, hydra_plugins.gradstudy_sweeper.sweeper\n"
        "heavy = {'jax', 'flax', 'sklearn', 'scipy', 'optax'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
        "from gradstudy.cells.compat import Inputs, compatibility_warnings\n"
        "from conftest import compose_config\n"
        "assert compatibility_warnings(compose_config('init=he', 'act=relu'), Inputs(0.1, 784)) == []\n"
        "print('scipy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "False"], done.stdout


@pytest.mark.parametrize(
    "override, key",
    [("model.depth=0", "model.depth"), ("act.name=glorot_magic", "act.name"), ("optim.lr=-1", "optim.lr")],
)
def test_a_rejected_config_is_refused_without_importing_jax(tmp_path, override, key):
    """Validation reads every name from jax-free registries (``cells.options``, ``cells.statistics``):
    a cell refused for a bad value records its message without the 0.8 s of jax, flax and optax."""
    code = (
        "import json, sys\n"
        "from conftest import compose_config\n"
        "from gradstudy.run import run_cell\n"
        f"cfg = compose_config({override!r}, 'results_dir={tmp_path}', 'study=s')\n"
        "folder = run_cell(cfg)\n"
        "meta = json.load(open(folder + '/meta.json'))\n"
        "print(meta['status'], '|', meta['message'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'optax', 'jaxlib'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
    )
    status, jax_modules = done.stdout.strip().split("\n")[-2:]
    assert status.startswith("failed |") and key in status, done.stdout
    assert jax_modules == "[]", done.stdout


@pytest.mark.slow
def test_zip_pairs_sweeps_element_by_element(tmp_path):
    """``hydra.sweeper.zip=[act,init]``: (tanh, xavier) and (relu, he), each crossed with the two
    learning rates: four cells, not eight."""
    args = ["-m", *TINY, "train.seeds=1", "train.steps=5", "act=tanh,relu", "init=xavier,he", "optim.lr=0.1,0.2"]
    done = run_cli([*args, "hydra.sweeper.zip=[act,init]", "study=zipped"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = load_study(tmp_path / "results" / "zipped").cells
    assert sorted(zip(cells["act"], cells["init"], cells["optim.lr"], strict=True)) == [
        ("relu", "he", 0.1),
        ("relu", "he", 0.2),
        ("tanh", "xavier", 0.1),
        ("tanh", "xavier", 0.2),
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["act=tanh,relu", "init=xavier,he,lecun"], "act has 2, init has 3"),
        (["act=tanh,relu"], "init not among the overrides"),
    ],
)
def test_zip_with_mismatched_keys_stops_before_any_job(tmp_path, overrides, message):
    bad = run_cli(["-m", *TINY, *overrides, "hydra.sweeper.zip=[act,init]"], tmp_path)
    assert bad.returncode == 2 and "gradstudy: hydra.sweeper.zip: " in bad.stderr and message in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "results").exists()
