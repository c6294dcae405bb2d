"""Figures are drawn with labels on a tiny study; the report survives one cell, one seed,
diverged seeds, incomplete cells, and empty or wrong folders."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from gradstudy import load_study, plots
from gradstudy.analysis import convergence_table
from gradstudy.report import main as report_main
from gradstudy.run import run_cell
from gradstudy.store import write_json


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


def _axes_with_data(fig):
    return [ax for ax in fig.axes if ax.has_data() and ax.get_label() != "<colorbar>"]


def test_every_figure_is_drawn_with_labels(tiny_study):
    study = load_study(tiny_study)
    complete = study.cells[study.cells["status"] == "complete"]
    conv = convergence_table(study, 0.5)
    figures = {
        "learning": plots.learning_curves(study.curves, complete),
        "profile": plots.gradient_profile(study.layers, complete),
        "heatmap": plots.grad_norm_heatmap(study.layers, complete),
        "activations": plots.activation_over_training(study.layers, complete),
        "saturation": plots.saturation_over_training(study.layers, complete),
        "hists": plots.histograms(study.hists, complete),
        "steps": plots.steps_to_target_figure(study.curves, complete, conv, 0.5),
        "percentiles": plots.preactivation_percentiles(study.layers, complete),
    }
    for name, fig in figures.items():
        drawn = _axes_with_data(fig)
        assert drawn, name
        for ax in drawn:
            assert ax.get_xlabel() and ax.get_ylabel(), name
        plt.close(fig)
    assert figures["profile"].axes[0].get_yscale() == "log"
    assert "step" in figures["learning"].axes[0].get_xlabel()


def test_cell_labels_name_only_what_varies(tiny_study):
    cells = load_study(tiny_study).cells
    labels = plots.cell_labels(cells).set_index("cell")
    he = labels.loc[cells.loc[cells["init"] == "he", "cell"].iloc[0], "label"]
    assert he.startswith("he") and "optim.lr=0.1" in he  # the learning rate varies across these cells
    assert not any("init.scale" in label for label in labels["label"])  # implied by the init choice
    assert any("act=" in f for f in labels["facet"])


def test_report_writes_tables_figures_and_lists_missing_cells(tiny_study, tmp_path):
    out = tmp_path / "rep"
    assert report_main([str(tiny_study), "--out", str(out), "--format", "png", "svg", "--dpi", "60", "--target", "0.5"]) == 0
    text = (out / "report.md").read_text()
    assert "## Convergence" in text and "## Gradients" in text and "Missing (not complete)" in text and "lecun" in text
    assert (out / "convergence.csv").is_file() and (out / "gradients.csv").is_file()
    names = {p.name for p in (out / "figures").iterdir()}
    assert {"learning_curves.png", "learning_curves.svg", "histograms.png", "preactivation_percentiles.png"} <= names
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
