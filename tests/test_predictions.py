"""Mean-field predictions against measured step-0 profiles, and cells the theory does not describe."""

import numpy as np
import pytest

from gradstudy import load_study
from gradstudy.analysis.predictions import cell_config, predicted_layers
from gradstudy.run import run_cells
from gradstudy.show.plots import activation_profile, gradient_profile

DEPTH = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from conftest import TINY, compose_config

    root = tmp_path_factory.mktemp("results")
    base = [
        *TINY,
        f"results_dir={root}",
        "study=theory",
        f"model.depth={DEPTH}",
        "model.width=256",
        "train.batch_size=256",
        "train.seeds=4",
        "train.steps=10",
        "train.eval_every=10",
        "stats.every=5",
    ]
    grid = [("init=xavier", "act=relu"), ("init=he", "act=relu"), ("init=xavier", "act=tanh")]
    normalized = [
        ("init=he", "act=relu", "norm=batchnorm"),
        ("init=xavier", "act=tanh", "norm=layernorm"),
        ("init=he", "act=relu", "norm=layernorm"),
    ]
    odd = [("init=he", "act=relu", "init.bias=0.1")]
    run_cells([(compose_config(*base, *cell), None) for cell in grid + normalized + odd])
    return load_study(root / "theory")


def _measured(study, stat):
    start = study.layers[(study.layers["step"] == 0) & (study.layers["stat"] == stat)]
    return start.groupby(["cell", "layer"])["value"].agg(lambda v: float(np.exp(np.log(v).mean())))


@pytest.mark.slow
def test_predicted_profiles_match_the_measured_step_0_profiles(study):
    """Width 256: every layer's measured scale (geometric mean over 4 seeds) within 15% of theory,
    including xavier-relu's delta, which shrinks 2^2.5 ~ 5.7x over 6 layers, ReLU with batch norm's,
    which grows (pi / (pi - 1))^2.5 ~ 2.6x, and tanh with layer norm's."""
    predicted = predicted_layers(study)
    assert len(predicted.layers["cell"].unique()) == 6
    for stat in ("delta_std", "act_std"):
        theory = predicted.layers[predicted.layers["stat"] == stat].set_index(["cell", "layer"])["value"]
        measured = _measured(study, stat).loc[theory.index]
        np.testing.assert_allclose(measured, theory, rtol=0.15, err_msg=stat)
    ratios = predicted.ratios().set_index("cell")["delta_std_ratio_predicted"]
    xavier_relu = next(c for c in ratios.index if c.startswith("xavier-relu"))
    assert ratios[xavier_relu] == pytest.approx(2 ** (-(DEPTH - 1) / 2), rel=1e-9)


@pytest.mark.slow
def test_normalized_predictions_lie_inside_the_seeds_range_at_step_0(study):
    """Each normalized cell's predicted delta and activation std at every layer lies within the
    range of its 4 seeds' measurements (widened by 5%)."""
    predicted = predicted_layers(study).layers
    start = study.layers[study.layers["step"] == 0]
    normalized = study.cells[study.cells["norm"] != "none"]
    assert len(normalized) == 3
    for cell in normalized["cell"]:
        for stat in ("delta_std", "act_std"):
            theory = predicted[(predicted["cell"] == cell) & (predicted["stat"] == stat)].set_index("layer")["value"]
            seeds = start[(start["cell"] == cell) & (start["stat"] == stat)].groupby("layer")["value"]
            assert ((theory >= seeds.min() * 0.95) & (theory <= seeds.max() * 1.05)).all(), (cell, stat)


def test_cells_outside_the_theory_are_named_with_the_reason(study):
    skipped = predicted_layers(study).skipped
    assert len(skipped) == 1
    assert "init.bias=0.1" in skipped["reason"].iloc[0]
    for figure in (gradient_profile, activation_profile):
        plot = figure(study.complete())
        notes = " ".join(plot.notes)
        assert "Dashed: the mean-field prediction at step 0" in notes
        assert "init.bias=0.1" in notes
        overlaid = [
            line for fig in plot.pages for ax in fig.axes for line in ax.lines if line.get_label() == "_overlay"
        ]
        assert overlaid, figure.__name__


def test_a_study_mixing_models_reads_a_cell_s_int_keys_back_from_float_columns():
    """In ``Study.cells`` of MLPs beside CNNs, ``model.channels`` is a float column (NaN for the MLPs)."""
    row = {"model": "cnn", "model.depth": 30.0, "model.channels": 8.0, "init": "he", "act": "relu", "init.scale": 1.0}
    cfg = cell_config(row)
    assert (cfg.model.name, cfg.model.depth, cfg.model.channels, cfg.init.name) == ("cnn", 30, 8, "he")
    assert isinstance(cfg.init.scale, float) and cfg.init.scale == 1.0
