"""Damaged files are detected, reported and redone; bad run keys stop a sweep before it writes; the
end-of-sweep summary never raises; result files follow the umask."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SLOW_CELL, TINY, compose_config, run_cli

from gradstudy import load_study
from gradstudy.callbacks import SummaryCallback
from gradstudy.run import run_cell
from gradstudy.schema import CURVES, LAYERS, META, CellStatus
from gradstudy.status import main as status_main
from gradstudy.store.state import cell_state

FAST = (*TINY, "train.seeds=2", "train.steps=10")


@pytest.fixture
def cell(tmp_path):
    cell_dir = Path(run_cell(compose_config(*FAST, f"results_dir={tmp_path}", "study=s")))
    assert cell_state(cell_dir).status == CellStatus.COMPLETE
    return cell_dir


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda d: _truncate(d / CURVES), CURVES),
        (lambda d: (d / LAYERS).unlink(), f"{LAYERS}: missing"),
        (lambda d: (d / META).write_text("{not json"), "meta.json: not readable as JSON"),
        (lambda d: (d / META).write_text("[1, 2]"), "meta.json: not a JSON object"),
    ],
    ids=["truncated table", "deleted table", "garbage meta.json", "meta.json not an object"],
)
def test_damaged_cell_is_corrupt_reported_and_redone(cell, damage, named, capsys):
    before = pd.read_parquet(cell / CURVES)
    damage(cell)
    state = cell_state(cell)
    assert state.status == CellStatus.CORRUPT and named in state.reason
    study = load_study(cell.parent)  # never raises on one bad cell
    row = study.cells.set_index("cell").loc[cell.name]
    assert row["status"] == CellStatus.CORRUPT and named in row["reason"]
    assert study.curves.empty
    assert status_main([str(cell.parent)]) == 1
    assert "corrupt" in capsys.readouterr().out
    run_cell(compose_config(*FAST, f"results_dir={cell.parent.parent}", "study=s"))
    assert "was corrupt" in capsys.readouterr().err
    assert cell_state(cell).status == CellStatus.COMPLETE
    pd.testing.assert_frame_equal(pd.read_parquet(cell / CURVES), before)  # redone bitwise the same


def test_meta_lists_each_table_with_size_rows_and_hash(cell):
    meta = json.loads((cell / META).read_text())
    assert set(meta["tables"]) >= {CURVES, LAYERS}
    assert meta["tables"][CURVES]["rows"] == len(pd.read_parquet(cell / CURVES))
    # a cell written before tables were listed still counts as complete while its tables read
    del meta["tables"]
    (cell / META).write_text(json.dumps(meta))
    assert cell_state(cell).status == CellStatus.COMPLETE


def test_force_reruns_whatever_state_the_folder_is_in(cell):
    (cell / META).write_text("garbage")
    run_cell(compose_config(*FAST, f"results_dir={cell.parent.parent}", "study=s", "force=true"))
    assert cell_state(cell).status == CellStatus.COMPLETE


def test_result_files_follow_the_umask(cell):
    for name in (CURVES, META):
        assert (cell / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_summary_never_raises(tmp_path, monkeypatch, capsys):
    callback = SummaryCallback()
    config = compose_config(*FAST, f"results_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/multirun", hydra=True)
    callback.on_multirun_start(config)
    assert (tmp_path / "multirun" / ".gradstudy_sweep").read_text() == callback.sweep  # how the jobs learn the sweep

    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr("gradstudy.store.sweeps.sweep_cells", broken)
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(config)
    assert exit_info.value.code == 1
    assert "summary could not be made: OSError: disk gone" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, key",
    [("study=../escape", "study"), ("study=.", "study"), ("budget=bogus", "budget")],
)
def test_bad_run_keys_stop_before_anything_is_written(tmp_path, override, key, capsys):
    callback = SummaryCallback()
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_start(
            compose_config(
                *FAST, f"results_dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path}/m", override, hydra=True
            )
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"gradstudy: {key}:")
    assert run_cell(compose_config(*FAST, f"results_dir={tmp_path / 'r'}", override)) == ""
    assert not (tmp_path / "r").exists() and not (tmp_path / "escape").exists() and not (tmp_path / "m").exists()


def test_a_results_dir_that_is_a_file_exits_2_with_one_line(tmp_path):
    target = tmp_path / "results"
    target.write_text("not a folder")
    out = run_cli(["-m", *FAST, f"results_dir={target}"], cwd=tmp_path)
    assert out.returncode == 2
    assert "gradstudy: results_dir: is a file, not a folder" in out.stderr
    assert "Traceback" not in out.stderr and target.read_text() == "not a folder"


@pytest.mark.slow
def test_a_damaged_sweep_is_redone_by_the_rerun_and_status_tells(tmp_path):
    first = run_cli(["-m", *FAST, "init=xavier,he", "study=d"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    cell = sorted((tmp_path / "results" / "d").glob("he-*"))[0]
    _truncate(cell / CURVES)
    status = run_cli_module("gradstudy.status", [str(tmp_path / "results" / "d")], tmp_path)
    assert status.returncode == 1 and "corrupt" in status.stdout and CURVES in status.stdout
    again = run_cli(["-m", *FAST, "init=xavier,he", "study=d"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "was corrupt" in again.stderr
    assert run_cli_module("gradstudy.status", [str(tmp_path / "results" / "d")], tmp_path).returncode == 0


def test_a_cell_whose_meta_json_was_deleted_is_corrupt_everywhere_and_redone(tmp_path, capsys):
    """Tables without meta.json prove nothing: status says corrupt and exits 1, load_study lists the
    cell with the reason, and a rerun trains it again."""
    cfg = compose_config(*TINY, f"results_dir={tmp_path / 'results'}", "study=lost")
    cell = Path(run_cell(cfg))
    (cell / META).unlink()
    assert status_main([str(tmp_path / "results" / "lost")]) == 1
    assert "corrupt" in capsys.readouterr().out
    row = load_study(tmp_path / "results" / "lost").cells.iloc[0]
    assert row["status"] == CellStatus.CORRUPT and row["reason"].startswith("meta.json missing; ")
    assert "tables present" in row["reason"]
    run_cell(cfg)
    assert "was corrupt (meta.json missing" in capsys.readouterr().err
    assert cell_state(cell).status == CellStatus.COMPLETE


def run_cli_module(module: str, args: list[str], cwd: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ----- locks, liveness and signals ------------------------------------------------------------------
def test_a_live_lock_leaves_the_cell_alone_and_a_stale_one_is_taken_over(tmp_path, capsys):
    from gradstudy.store import locks

    cfg = compose_config(*FAST, f"results_dir={tmp_path}", "study=s")
    cell_dir = Path(run_cell(cfg))
    meta = json.loads((cell_dir / META).read_text())
    (cell_dir / META).write_text(json.dumps({**meta, "status": "running"}))
    held = locks.claim(cell_dir)
    assert held is not None and locks.claim(cell_dir) is None
    state = cell_state(cell_dir)
    assert state.status == "running" and f"pid {os.getpid()}" in state.reason
    run_cell(cfg)
    assert "is running in pid" in capsys.readouterr().err
    assert json.loads((cell_dir / META).read_text())["status"] == "running"  # left alone
    held.release()
    assert cell_state(cell_dir).status == "interrupted"  # running, and no process holds it
    stale = {**held.info, "heartbeat": 0.0, "token": "old"}
    (cell_dir / locks.LOCK).write_text(json.dumps(stale))
    run_cell(cfg)
    assert "was interrupted" in capsys.readouterr().err
    assert cell_state(cell_dir).status == CellStatus.COMPLETE and not (cell_dir / locks.LOCK).exists()


SIGNALLED = (*SLOW_CELL, "study=sig")


def _start_and_wait_for_training(tmp_path: Path):
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradstudy.run", "-m", *SIGNALLED],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        metas = list((tmp_path / "results" / "sig").glob("*/meta.json"))
        if metas and "provenance" not in metas[0].read_text() and '"versions"' in metas[0].read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)  # compiled, and inside the chunks
    return proc, metas[0].parent


@pytest.mark.parametrize("signum, status", [(2, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_a_signal_marks_the_cell_interrupted_prints_the_summary_and_a_rerun_finishes(tmp_path, signum, status):
    proc, cell_dir = _start_and_wait_for_training(tmp_path)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    assert json.loads((cell_dir / META).read_text())["status"] == "interrupted"
    assert "gradstudy summary" in out and "interrupted" in out
    assert not (cell_dir / ".lock").exists()
    if signum == 2:  # one rerun is enough to show the path (kill -9 and the submitit test rerun too)
        again = run_cli(["-m", *SIGNALLED], cwd=tmp_path)
        assert again.returncode == 0 and "was interrupted" in again.stderr
        assert cell_state(cell_dir).status == CellStatus.COMPLETE


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_whose_raise_python_swallowed_still_stops_the_cell(tmp_path, monkeypatch):
    """A signal that lands in a garbage-collector callback or a ``__del__`` (JAX has such a
    callback) raises where Python prints the exception and drops it; the run must stop anyway."""
    import signal

    from gradstudy import run
    from gradstudy.engine.program import Engine

    class Dropped:
        def __del__(self):
            run._interrupt(signal.SIGINT, None)  # the handler, where its raise is swallowed

    trained = Engine.run

    def run_with_a_dropped_signal(self, *args, **kwargs):
        Dropped()
        return trained(self, *args, **kwargs)

    monkeypatch.setattr(run, "_SIGNALLED", [])
    monkeypatch.setattr(Engine, "run", run_with_a_dropped_signal)
    with pytest.raises(run.CellInterrupted):
        run_cell(compose_config(*FAST, f"results_dir={tmp_path}", "study=s"))
    (cell_dir,) = (tmp_path / "s").iterdir()
    meta = json.loads((cell_dir / META).read_text())
    assert meta["status"] == "interrupted" and meta["message"] == "stopped by SIGINT"
    assert not (cell_dir / ".lock").exists()


@pytest.mark.slow
def test_kill_9_leaves_a_cell_that_reads_interrupted_and_a_rerun_finishes(tmp_path):
    proc, cell_dir = _start_and_wait_for_training(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    state = cell_state(cell_dir)
    assert state.status == "interrupted" and "stopped without finishing" in state.reason
    assert status_main([str(cell_dir.parent)]) == 1
    again = run_cli(["-m", *SIGNALLED], cwd=tmp_path)
    assert again.returncode == 0 and cell_state(cell_dir).status == CellStatus.COMPLETE


@pytest.mark.slow
def test_two_identical_sweeps_at_once_train_each_cell_once(tmp_path):
    import subprocess
    import sys

    args = ["-m", *TINY, "train.seeds=2", "train.steps=400", "init=xavier,he", "study=twice"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gradstudy.run", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    cells = sorted(d.name for d in (tmp_path / "results" / "twice").iterdir() if d.is_dir())
    stderr = "".join(err for _, err in outs)
    for cell in cells:
        trained = sum(
            1
            for line in stderr.splitlines()
            if (line.startswith(cell) and "400/400" in line) or line.startswith(f"gradstudy: {cell}: training in group")
        )
        assert trained == 1, (cell, stderr[-3000:])
        assert cell_state(tmp_path / "results" / "twice" / cell).status == CellStatus.COMPLETE


# ----- memory preflight ---------------------------------------------------------------------------
def test_an_over_memory_config_is_refused_before_anything_is_allocated(tmp_path):
    big = ("model.width=100000", "model.depth=3", "train.seeds=100")  # shallow: quick to compile for the analysis
    cell_dir = Path(run_cell(compose_config(*TINY, *big, f"results_dir={tmp_path}")))
    meta = json.loads((cell_dir / META).read_text())
    assert meta["status"] == "failed" and "GiB are available" in meta["message"]
    assert all(key in meta["message"] for key in ("model.width=100000", "model.depth=3", "train.seeds=100"))
    assert not any(cell_dir.glob("*.parquet"))


@pytest.mark.slow
def test_the_memory_need_is_xla_s_and_covers_the_state():
    import jax

    from gradstudy.engine.memory import OutOfMemory, cell_need, memory_need, preflight
    from gradstudy.engine.program import Engine
    from gradstudy.inputs.data import load_dataset

    cfg = compose_config(*FAST, "stats=full")
    engine_dataset = load_dataset(cfg.data)
    engine = Engine(cfg, engine_dataset)
    seeds = [0, 1]
    need = cell_need(engine, cfg, seeds)
    assert memory_need(cfg, engine_dataset, n_runs=4).program > need.program  # the need grows with the runs
    real = engine.init(seeds)
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(real))
    abstract = engine.abstract_state(len(seeds))  # what the programs are lowered with: the real state's shapes
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    assert all(
        (a.shape, a.dtype) == (r.shape, r.dtype)
        for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real), strict=True)
    )
    assert need.exact and need.program >= state_bytes > 0
    assert preflight(engine, cfg, seeds, available=10 * 2**40) is None  # far below: the rough size is enough
    with pytest.raises(OutOfMemory, match="model.width"):
        preflight(engine, cfg, seeds, available=need.total - 1)


def test_a_full_disk_fails_the_cell_with_the_message_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    cell_dir = Path(run_cell(compose_config(*FAST, f"results_dir={tmp_path}")))
    meta = json.loads((cell_dir / META).read_text())
    assert meta["status"] == "failed" and "No space left on device" in meta["message"]
    assert not any(p.suffix == ".parquet" or p.name.startswith(".") and "parquet" in p.name for p in cell_dir.iterdir())


def test_a_lock_being_written_is_not_taken_for_a_damaged_one(tmp_path, monkeypatch):
    """An empty (or half-written) lock is left alone while it is fresh, taken over once it is old; on
    a file system without hard links the lock is still created exclusively."""
    from gradstudy.store import locks

    lock = tmp_path / locks.LOCK
    lock.write_text("")
    assert locks.claim(tmp_path) is None  # fresh: someone is writing it
    old = time.time() - 2 * locks.FRESH_S
    os.utime(lock, (old, old))
    taken = locks.claim(tmp_path)
    assert taken is not None and locks.read_lock(tmp_path)["token"] == taken.info["token"]
    taken.release()
    assert not lock.exists()

    def no_hard_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(locks.os, "link", no_hard_links)
    first = locks.claim(tmp_path)
    assert first is not None and locks.claim(tmp_path) is None
    assert locks.read_lock(tmp_path)["token"] == first.info["token"]
    first.release()
    assert not list(tmp_path.glob(f"{locks.LOCK}.*"))  # no temporary files left behind
