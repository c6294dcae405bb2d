"""Figures are drawn with labels on a tiny study; the report survives one cell, one seed,
diverged seeds, incomplete cells, and empty or wrong folders."""

import json
from pathlib import Path

import pytest

from gradstudy import load_study
from gradstudy.report import main as report_main
from gradstudy.run import run_cell
from gradstudy.show.figures import REPORT_FIGURES, steps_figure
from gradstudy.store.files import write_json


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Two full-tier cells (one with a diverged seed) and one incomplete cell."""
    from conftest import TINY, compose_config

    root = tmp_path_factory.mktemp("results")
    base = [*TINY, f"results_dir={root}", "study=tiny", "train.seeds=3", "stats=full", "act=tanh"]
    run_cell(compose_config(*base, "init=he"))
    run_cell(compose_config(*base, "init=normal", "init.sigma=3", "act=linear", "optim.lr=5"))
    interrupted = Path(run_cell(compose_config(*base, "init=lecun")))
    meta = json.loads((interrupted / "meta.json").read_text())
    write_json(interrupted / "meta.json", {**meta, "status": "running"})
    return root / "tiny"


@pytest.mark.slow
def test_every_report_figure_is_drawn_with_labels(tiny_study):
    study = load_study(tiny_study).complete()
    for spec in [steps_figure(0.5), *REPORT_FIGURES]:
        if spec.missing(study):
            continue
        plot = spec.render(study)
        drawn = [ax for fig in plot.pages for ax in fig.axes if ax.has_data() and ax.get_label() != "<colorbar>"]
        assert drawn, spec.name
        for ax in drawn:
            assert ax.get_xlabel() and ax.get_ylabel(), spec.name
        plot.close()


@pytest.mark.slow
def test_report_writes_tables_figures_and_lists_missing_cells(tiny_study, tmp_path):
    out = tmp_path / "rep"
    assert (
        report_main([str(tiny_study), "--out", str(out), "--format", "png", "svg", "--dpi", "60", "--target", "0.5"])
        == 0
    )
    text = (out / "report.md").read_text()
    assert "## Convergence" in text and "## Gradients" in text and "Missing (not complete)" in text and "lecun" in text
    assert (out / "convergence.csv").is_file() and (out / "gradients.csv").is_file()
    names = {p.name for p in (out / "figures").iterdir()}
    assert {
        "learning_curves.png",
        "learning_curves.svg",
        "histograms.png",
        "preactivation_percentiles.png",
        "activation_profile.png",
    } <= names
    for line in text.splitlines():
        if line.startswith("!["):
            assert (out / line.split("(")[1].rstrip(")")).is_file()


def test_report_on_one_cell_one_seed(tmp_path):
    from conftest import TINY, compose_config

    run_cell(compose_config(*TINY, f"results_dir={tmp_path}", "study=one", "train.seeds=[5]"))
    assert report_main([str(tmp_path / "one")]) == 0
    assert "## Figures" in (tmp_path / "one" / "report.md").read_text()


def test_report_on_empty_or_wrong_folder(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "holds no gradstudy cells" in capsys.readouterr().err
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "no results folder" in capsys.readouterr().err


@pytest.mark.slow
def test_the_report_keeps_its_theory_overlays_when_the_data_files_are_gone(tmp_path, monkeypatch):
    """The run records what the theory needs (``theory_inputs`` in meta.json), so a study whose
    data folder has moved away still gets its full report, dashed predictions included, and no
    figure or table loads a dataset."""
    import shutil

    import numpy as np
    from conftest import TINY, compose_config
    from test_data import _write_idx

    from gradstudy.analysis.predictions import predicted_layers
    from gradstudy.inputs import data

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 40)):
        _write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), False)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8), False)
    base = [*TINY, "data=mnist", f"data.root={folder}", f"results_dir={tmp_path / 'results'}", "study=moved"]
    run_cell(compose_config(*base, "init=he", "act=relu", "train.batch_size=32"))
    shutil.rmtree(folder)
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("the report loaded a dataset"))
    study = load_study(tmp_path / "results" / "moved")
    predicted = predicted_layers(study)
    assert predicted.skipped.empty and len(predicted.layers) == 3 * study.cells["model.depth"].iloc[0]
    assert report_main([str(tmp_path / "results" / "moved")]) == 0
    text = (tmp_path / "results" / "moved" / "report.md").read_text()
    assert "Dashed: the mean-field prediction" in text and "No prediction for" not in text
