"""Parallel and cluster launchers run the documented command and give the basic launcher's numbers
bit for bit; the sweep id reaches the jobs through a file, not the environment."""

import pandas as pd
import pytest
from conftest import TINY, compose_config, run_cli

from gradstudy.store import CURVES, LAYERS, STEPS

GRID = ["-m", *TINY, "train.seeds=2", "init=xavier,he"]


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("basic")
    out = run_cli(GRID, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    return cwd / "results" / "default"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launcher_gives_the_basic_launcher_s_numbers(launcher, basic, tmp_path):
    out = run_cli([GRID[0], f"hydra/launcher={launcher}", *GRID[1:]], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gradstudy summary" in out.stdout and out.stdout.count("complete") >= 2  # the jobs found the sweep
    study = tmp_path / "results" / "default"
    cells = sorted(p.name for p in basic.iterdir() if p.is_dir())
    assert cells == sorted(p.name for p in study.iterdir() if p.is_dir())
    for cell in cells:
        for table in (CURVES, LAYERS, STEPS):
            pd.testing.assert_frame_equal(pd.read_parquet(study / cell / table), pd.read_parquet(basic / cell / table))
    assert list((tmp_path / "multirun").glob("*/*/.gradstudy_sweep"))


def test_the_slurm_example_composes_with_shared_results():
    cfg = compose_config("hydra/launcher=slurm", "results_dir=/shared/results", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition and launcher.timeout_min and launcher.array_parallelism and launcher.gpus_per_node == 1
