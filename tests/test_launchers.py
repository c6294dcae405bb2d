"""Parallel and cluster launchers run the documented command, batched, and give the basic launcher's
numbers bit for bit; the sweep id reaches the jobs through a file, not the environment."""

import json

import pandas as pd
import pytest
from conftest import SLOW_CELL, TINY, compose_config, run_cli

from gradstudy.schema import CURVES, LAYERS, META, STEPS

GRID = ["-m", *TINY, "train.seeds=2", "init=xavier,he"]


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("basic")
    out = run_cli(GRID, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    return cwd / "results" / "default"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
@pytest.mark.slow
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
    # the sweeper handed both cells to one job, so the launcher ran them as one program
    groups = [json.loads((study / cell / META).read_text())["group"] for cell in cells]
    assert groups[0] == groups[1] and groups[0]["size"] == 2


def test_the_slurm_example_composes_with_shared_results():
    cfg = compose_config("hydra/launcher=slurm", "results_dir=/shared/results", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition and launcher.timeout_min and launcher.array_parallelism and launcher.gpus_per_node == 1


@pytest.mark.slow
def test_an_interrupted_submitit_job_leaves_its_cell_interrupted_and_a_rerun_finishes(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from gradstudy.store.state import cell_state

    args = [
        "-m",
        "hydra/launcher=submitit_local",
        *SLOW_CELL,
        "study=preempted",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"JAX_PLATFORMS": "cpu"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "gradstudy.run", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, job_pid, cell_dir = time.time() + 120, None, None
    while time.time() < deadline and job_pid is None:
        metas = list((tmp_path / "results" / "preempted").glob("*/meta.json"))
        jobs = [p.name for p in (tmp_path / "multirun").glob("*/*/.submitit/*") if p.name.isdigit()]
        if metas and jobs and '"versions"' in metas[0].read_text():
            job_pid, cell_dir = int(jobs[0]), metas[0].parent
        time.sleep(0.2)
    assert job_pid is not None, launcher.communicate(timeout=60)
    time.sleep(1.0)
    os.kill(job_pid, signal.SIGTERM)
    launcher.communicate(timeout=120)
    assert json.loads((cell_dir / "meta.json").read_text())["status"] == "interrupted"
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert cell_state(cell_dir).status == "complete"


def test_a_job_without_the_environment_finds_its_sweep_in_the_sweep_folder(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from gradstudy.callbacks import SWEEP_ENV, SWEEP_FILE, SummaryCallback, sweep_of_job

    config = compose_config(*TINY, f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", hydra=True)
    callback = SummaryCallback()
    callback.on_run_start(config)
    assert (tmp_path / "run" / SWEEP_FILE).read_text() == callback.sweep
    monkeypatch.delenv(SWEEP_ENV)  # a cluster node that did not inherit it
    HydraConfig.instance().set_config(config)
    assert sweep_of_job() == callback.sweep
