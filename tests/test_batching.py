"""Cells that share a program train as one: every cell's folder holds bitwise its solo run's numbers,
the training program is traced and compiled once per group, a bad cell fails alone, and the
sweeper hands each group to one job."""

import json
from collections import Counter
from pathlib import Path

import jax
import pandas as pd
import pytest
from conftest import TINY, compose_config, run_cli

from gradstudy import run as run_module
from gradstudy.run import run_cell, run_cells
from gradstudy.schema import CURVES, HISTS, LAYERS, META, SEEDS, STEPS, CellStatus
from hydra_plugins.gradstudy_sweeper.sweeper import members_override

#: 3 seeds: two cells make 6 runs, 3 on each of the 2 devices; a solo cell is padded to 4.
BASE = (*TINY, "train.seeds=3", "stats=full", "stats.hist_steps=[0,30]", "stats.extra=[unit_mean_median]")
GRIDS = {
    "init x act": [
        ("init=xavier", "act=relu"),
        ("init=he", "act=relu"),
        ("init=xavier", "act=tanh"),
        ("init=he", "act=tanh"),
    ],
    # a linear net with a wide init (conftest's LR_SWEEP): lr 50 diverges in every seed
    "lr sweep": [("act=linear", "init=normal", "init.sigma=0.5", f"optim.lr={lr}") for lr in (0.005, 0.07, 50)],
    "momentum and clip": [
        ("optim=momentum", "optim.lr=0.05", "optim.momentum=0.5", "optim.clip_norm=1.0"),
        ("optim=momentum", "optim.lr=0.1", "optim.momentum=0.9", "optim.clip_norm=0.1"),
    ],
    # schedule numbers and weight decay are per-run data; another schedule kind is another program
    "schedules and decay": [
        ("optim=momentum", "optim.schedule=warmup_cosine", "optim.warmup_steps=5", "optim.weight_decay=0.01"),
        ("optim=momentum", "optim.schedule=warmup_cosine", "optim.warmup_steps=10", "optim.end_lr=0.01")
        + ("optim.weight_decay=0.5",),
        ("optim=momentum", "optim.schedule=step", "optim.boundaries=[10,20]", "optim.factors=[0.5,0.2]"),
    ],
    # residual nets: He and Fixup share a program (Fixup is initial values), their gains start apart
    "residual": [
        ("model=resmlp", "init=he", "model.branch_scale=skipinit", "model.branch_init=0.2"),
        ("model=resmlp", "init=fixup", "model.branch_scale=skipinit"),
    ],
}
GROUP_SIZES = {
    "init x act": [2, 2, 2, 2],
    "lr sweep": [3, 3, 3],
    "momentum and clip": [2, 2],
    "schedules and decay": [2, 2, 1],
    "residual": [2, 2],
}


def _tables(cell_dir: str) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(cell_dir) / name) for name in (CURVES, LAYERS, STEPS, HISTS, SEEDS)}


def _meta(cell_dir: str) -> dict:
    return json.loads((Path(cell_dir) / META).read_text())


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.slow
def test_each_cell_of_a_batched_grid_is_bitwise_its_solo_run(grid, tmp_path):
    overrides = GRIDS[grid]
    batched = run_cells([(compose_config(*BASE, *o, f"results_dir={tmp_path / 'b'}"), None) for o in overrides])
    for o, cell_dir, size in zip(overrides, batched, GROUP_SIZES[grid], strict=True):
        solo = run_cell(compose_config(*BASE, *o, f"results_dir={tmp_path / 's'}"))
        assert Path(solo).name == Path(cell_dir).name
        meta, solo_meta = _meta(cell_dir), _meta(solo)
        assert (
            meta["status"] == CellStatus.COMPLETE and meta["group"]["size"] == size and solo_meta["group"]["size"] == 1
        )
        assert meta["diverged"] == solo_meta["diverged"]
        ours, theirs = _tables(cell_dir), _tables(solo)
        assert all(len(frame) for frame in ours.values())
        for name, frame in ours.items():
            assert frame.equals(theirs[name]), f"{name} of {o} differs between the group and the solo run"
    if grid == "lr sweep":
        assert len(_meta(batched[2])["diverged"]) == 3 and not _meta(batched[0])["diverged"]


def _bare(name: str | None) -> str | None:
    """``jit(f)`` (a compile event's name) -> ``f`` (a trace event's)."""
    return name[4:-1] if name and name.startswith("jit(") else name


def _count_programs(fn) -> tuple[Counter, Counter]:
    """(traces, compiles) of each jitted function while ``fn`` runs, by function name."""
    traces, compiles = Counter(), Counter()

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traces[_bare(kwargs.get("fun_name"))] += 1
        elif event == "/jax/core/compile/backend_compile_duration":
            compiles[_bare(kwargs.get("fun_name"))] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return traces, compiles


@pytest.mark.parametrize(
    ("axes", "programs"),
    [
        ((("init=xavier", "init=he"), ("optim.lr=0.05", "optim.lr=0.2")), 1),
        ((("init=xavier", "init=lecun"), ("act=elu", "act=selu")), 2),  # one group per activation, of 2 cells
    ],
    ids=["init x lr", "init x act"],
)
@pytest.mark.slow
def test_a_grid_traces_and_compiles_its_training_program_once_per_group(axes, programs, tmp_path):
    run_module._ENGINES.clear()
    cells = [
        (compose_config(*TINY, "train.seeds=2", "model.width=13", a, b, f"results_dir={tmp_path}"), None)
        for a in axes[0]
        for b in axes[1]
    ]
    traces, compiles = _count_programs(lambda: run_cells(cells))
    metas = [_meta(str(d)) for d in _dirs(tmp_path)]
    assert all(m["status"] == CellStatus.COMPLETE and m["group"]["size"] == 4 // programs for m in metas)
    assert traces["_chunk_fn"] == programs, traces
    assert compiles["_chunk_fn"] == programs, compiles
    # the same grid again in the same process (forced): nothing is traced again
    again = [
        (compose_config(*TINY, "train.seeds=2", "model.width=13", a, b, "force=true", f"results_dir={tmp_path}"), None)
        for a in axes[0]
        for b in axes[1]
    ]
    traces, _ = _count_programs(lambda: run_cells(again))
    assert traces["_chunk_fn"] == 0, traces


def _dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "default").iterdir() if p.is_dir())


def test_a_bad_cell_fails_alone_and_its_group_trains(tmp_path):
    good = [("init=xavier",), ("init=he",)]
    cells = [(compose_config(*TINY, *o, f"results_dir={tmp_path}"), None) for o in good]
    bad = compose_config(*TINY, "optim.lr=-1", f"results_dir={tmp_path}")
    dirs = run_cells([cells[0], (bad, None), cells[1]])
    metas = [_meta(d) for d in dirs]
    assert [m["status"] for m in metas] == [CellStatus.COMPLETE, CellStatus.FAILED, CellStatus.COMPLETE]
    assert "optim.lr" in metas[1]["message"]
    assert metas[0]["group"] == metas[2]["group"] and metas[0]["group"]["size"] == 2


def test_a_group_that_fails_reruns_its_cells_one_by_one(tmp_path, monkeypatch):
    from gradstudy.engine.program import Engine

    calls = []
    original = Engine.run

    def flaky(self, state, seeds, on_chunk=None):
        calls.append(len(seeds))
        if len(calls) == 1:
            raise RuntimeError("a device fell over")
        return original(self, state, seeds, on_chunk)

    monkeypatch.setattr(Engine, "run", flaky)
    cells = [(compose_config(*TINY, o, f"results_dir={tmp_path}"), None) for o in ("init=xavier", "init=he")]
    metas = [_meta(d) for d in run_cells(cells)]
    assert calls == [10, 5, 5]
    assert all(m["status"] == CellStatus.COMPLETE and m["group"]["size"] == 1 for m in metas)


def test_a_cell_held_by_another_process_is_left_out_of_the_group(tmp_path):
    from gradstudy.store.locks import claim

    cells = [
        (compose_config(*TINY, o, f"results_dir={tmp_path}"), None) for o in ("init=xavier", "init=he", "init=lecun")
    ]
    held = tmp_path / "default" / _cell_name(cells[1][0])
    held.mkdir(parents=True)
    lock = claim(held)
    try:
        dirs = run_cells(cells)
    finally:
        lock.release()
    assert dirs[1] == str(held) and not (held / META).exists()
    assert [_meta(dirs[i])["group"]["size"] for i in (0, 2)] == [2, 2]


def _cell_name(cfg) -> str:
    from gradstudy.cells.config import canonical, resolved
    from gradstudy.store.ids import cell_id

    return cell_id(canonical(resolved(cfg)))


def test_the_members_override_round_trips_through_hydra_s_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cells = [
        ["init=he", "+arm=snn", "study=it's", "stats.extra=[unit_mean_median]"],
        ["optim.lr=1e-3", "data.root='a b'"],
    ]
    (override,) = OverridesParser.create().parse_overrides([members_override(cells)])
    assert override.value() == cells


@pytest.mark.slow
def test_the_sweeper_hands_each_group_to_one_job(tmp_path):
    out = run_cli(["-m", *TINY, "train.seeds=2", "init=xavier,he", "act=relu,tanh"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 cells in 2 jobs" in out.stderr + out.stdout
    metas = [_meta(str(d)) for d in _dirs(tmp_path / "results")]
    assert len(metas) == 4 and all(m["status"] == CellStatus.COMPLETE and m["group"]["size"] == 2 for m in metas)
    assert {m["config"]["act"]["name"] for m in metas if m["group"] == metas[0]["group"]} == {
        metas[0]["config"]["act"]["name"]
    }
    # batching off: one job per cell, the same cells
    off = run_cli(
        ["-m", *TINY, "train.seeds=2", "init=xavier,he", "hydra.sweeper.group=false", "force=true"], cwd=tmp_path
    )
    assert off.returncode == 0, off.stderr[-3000:]
    assert "Launching 2 jobs" in off.stderr + off.stdout


def test_two_members_that_compose_to_one_cell_train_it_once(tmp_path, capsys):
    """A preset whose arm and experiment set the same key can make two members one config."""
    cfg = compose_config(*TINY, f"results_dir={tmp_path}", "train.seeds=1")
    first, second = run_cells([(cfg, None), (cfg.copy(), None)])
    assert first == second
    assert json.loads((Path(first) / META).read_text())["status"] == CellStatus.COMPLETE
    err = capsys.readouterr().err
    assert "listed twice in this group" in err and "left alone" not in err
