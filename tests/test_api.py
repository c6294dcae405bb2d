"""Studies from Python: gradstudy.sweep against the command line (bitwise), twice in one process,
and bad input refused before anything is written."""

import pandas as pd
import pytest
from conftest import TINY, run_cli
from hydra.core.global_hydra import GlobalHydra

import gradstudy
from gradstudy.schema import META, TABLE_COLUMNS

GRID = [*TINY, "train.seeds=2", "init=xavier,he", "act=relu,tanh"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same 2 x 2 grid made by the command line (study cli) and by gradstudy.sweep (study api)."""
    root = tmp_path_factory.mktemp("api")
    done = run_cli(["-m", *GRID, "study=cli"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    study = gradstudy.sweep(GRID, study="api", results_dir=root / "results", summary=False)
    return root / "results", study


@pytest.mark.slow
def test_a_sweep_from_python_equals_the_command_line_s_bitwise(both):
    results, study = both
    cli = sorted(p.name for p in (results / "cli").iterdir() if p.is_dir())
    assert sorted(study.cells["cell"]) == cli and len(cli) == 4
    assert (study.cells["status"] == "complete").all()
    for cell in cli:
        for table in TABLE_COLUMNS:
            a, b = results / "cli" / cell / table, results / "api" / cell / table
            assert a.is_file() == b.is_file(), (cell, table)
            if a.is_file():
                pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)


@pytest.mark.slow
def test_a_second_sweep_in_the_same_process_skips_complete_cells_and_leaves_no_hydra_state(both):
    results, study = both
    assert not GlobalHydra.instance().is_initialized()
    stamps = {p: p.stat().st_mtime_ns for p in (results / "api").glob(f"*/{META}")}
    grid = {k: v for k, v in (o.split("=", 1) for o in TINY)} | {"train.seeds": 2, "init": ["xavier", "he"]}
    again = gradstudy.sweep({**grid, "act": ["relu", "tanh"]}, study="api", results_dir=results, summary=False)
    assert {p: p.stat().st_mtime_ns for p in (results / "api").glob(f"*/{META}")} == stamps
    pd.testing.assert_frame_equal(again.curves, study.curves)
    assert not GlobalHydra.instance().is_initialized()
    report = gradstudy.write_report(again, out=results / "report")
    assert report.name == "report.md" and "4 complete cell(s) of 4" in report.read_text()


@pytest.mark.slow
def test_zip_and_one_cell_from_python(both, tmp_path):
    results, _ = both
    study = gradstudy.sweep(
        [*TINY, "train.seeds=1", "train.steps=5", "act=tanh,relu", "init=xavier,he"],
        study="zipped",
        results_dir=tmp_path,
        zip=["act", "init"],
        summary=False,
    )
    assert sorted(zip(study.cells["act"], study.cells["init"], strict=True)) == [("relu", "he"), ("tanh", "xavier")]
    folder = gradstudy.run_cell([*TINY, "train.seeds=1", "train.steps=5"], study="one", results_dir=tmp_path)
    assert (folder / META).is_file()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"model.nokey": 3}, "model.nokey"),
        ({"model.depth": "deep"}, "model.depth"),
        ({"init": []}, "init"),
        ({"model.depth": 0}, "model.depth"),
        ({"init": "glorot_magic"}, "glorot_magic"),
        (["act=relu,elu"], "run_cell"),
    ],
)
def test_bad_input_raises_config_error_naming_the_key_and_writes_nothing(tmp_path, overrides, key):
    call = gradstudy.run_cell if key == "run_cell" else gradstudy.sweep
    with pytest.raises(gradstudy.ConfigError, match=key):
        call(overrides, study="bad", results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()
    assert not GlobalHydra.instance().is_initialized()


def test_a_list_valued_key_takes_a_list_and_a_list_of_lists_sweeps_it():
    from gradstudy.api import override_strings

    assert override_strings({"optim.boundaries": [100, 200], "optim.factors": [[0.5, 0.1], [0.2, 0.2]]}) == [
        "optim.boundaries=[100,200]",
        "optim.factors=[0.5,0.1],[0.2,0.2]",
    ]
    assert override_strings({"stats.extra": [], "optim.lr": [0.1, 0.3]}) == ["stats.extra=[]", "optim.lr=0.1,0.3"]


@pytest.mark.slow
def test_a_scheduled_grid_from_python_warns_when_lr_and_schedule_both_vary(tmp_path, capsys):
    grid = {
        **{k: v for k, v in (o.split("=", 1) for o in TINY)},
        "train.seeds": 1,
        "optim.lr": [0.05, 0.1],
        "optim.schedule": ["constant", "step"],
        "optim.boundaries": [15],
        "optim.factors": [0.1],
    }
    study = gradstudy.sweep(grid, study="sched", results_dir=tmp_path)
    assert len(study.cells) == 4 and (study.cells["status"] == "complete").all()
    assert study.varying_keys == ["optim.lr", "optim.schedule"]
    assert "optim.lr and optim.schedule both vary" in capsys.readouterr().err
