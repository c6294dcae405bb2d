"""Paper presets compose and train; claim checks give the known answer on hand-made results; reproduce's edges."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from gradstudy.cells.validate import validate
from gradstudy.papers import papers
from gradstudy.papers.claims import (
    ABOVE,
    BELOW,
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    Measurement,
    check,
    decide,
    difference,
)
from gradstudy.reproduce import main as reproduce_main
from gradstudy.reproduce import plan, write_reproduction
from gradstudy.run import run_cell
from gradstudy.schema import conf_dir
from gradstudy.store.study import Study, load_study

#: Cells per preset: the size of each paper's grid.
GRID_SIZES = {
    "glorot2010": 12,
    "he2015": 12,
    "clevert2015": 3,
    "ioffe2015": 2,
    "klambauer2017": 6,
    "schoenholz2017": 35,
    "chapter11": 10,
    "zhang2019": 9,
    "de2020": 9,
    "balduzzi2017": 8,
    "pennington2017": 12,
    "xiao2018": 6,
}


def test_every_preset_has_a_paper_module_and_the_other_way_round():
    presets = {p.stem for p in Path(conf_dir(), "experiment").glob("*.yaml")}
    assert presets == set(papers()) == set(GRID_SIZES)


@pytest.mark.parametrize("name", sorted(GRID_SIZES))
@pytest.mark.parametrize("budget", ["cpu", "paper", "smoke"])
def test_every_preset_composes_all_its_cells(tmp_path, name, budget):
    p = plan(name, budget, str(tmp_path))
    assert len(p.cells) == GRID_SIZES[name] == len({c.cell for c in p.cells})
    assert p.study_dir == tmp_path / f"{name}-{budget}"
    for c in p.cells:
        cfg = c.cfg
        validate(cfg)
        own = cfg.budgets[budget].get(cfg.model.name, {})  # a model's own budget keys (he2015's conv arms)
        assert cfg.train.steps == own.get("steps", cfg.budgets[budget].steps)
        if budget != "paper":  # cpu and smoke budgets never read local files
            assert cfg.data.name in {"mnist5k", "shapeset", "digits"}


#: he2015's MLP cells at the cpu budget before its grid gained conv arms (zipped model, act, data).
HE2015_MLP_CELLS = {
    "he-prelu-none-mnist5k-d22w128-momentum-247bfc67c6",
    "he-prelu-none-mnist5k-d30w128-momentum-1417df1306",
    "he-relu-none-mnist5k-d22w128-momentum-3ae2422a98",
    "he-relu-none-mnist5k-d30w128-momentum-5b5c6d66cd",
    "lecun-prelu-none-mnist5k-d22w128-momentum-bd8c3b901f",
    "lecun-prelu-none-mnist5k-d30w128-momentum-63265e229e",
    "lecun-relu-none-mnist5k-d22w128-momentum-22591af2a4",
    "lecun-relu-none-mnist5k-d30w128-momentum-43ecabbb61",
}


def test_a_preset_s_zipped_keys_pair_up_and_its_older_cells_keep_their_ids(tmp_path):
    cells = plan("he2015", "cpu", str(tmp_path)).cells
    arms = {(c.cfg.model.name, c.cfg.act.name, c.cfg.data.name) for c in cells}
    assert arms == {("mlp", "relu", "mnist5k"), ("mlp", "prelu", "mnist5k"), ("cnn", "relu", "digits")}
    assert {c.cell for c in cells if c.cfg.model.name == "mlp"} == HE2015_MLP_CELLS
    cnn = [c.cfg for c in cells if c.cfg.model.name == "cnn"]
    assert len(cnn) == 4 and {(c.train.steps, c.optim.lr, c.model.padding) for c in cnn} == {(400, 0.003, "circular")}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRID_SIZES))
def test_every_preset_trains_one_cell_at_its_real_depth(tmp_path, name):
    p = plan(name, "smoke", str(tmp_path))
    deepest = max(
        p.cells, key=lambda c: compose_config(f"+experiment={name}", "budget=smoke", *c.overrides).model.depth
    )
    cfg = compose_config(f"+experiment={name}", "budget=smoke", f"results_dir={tmp_path}", *deepest.overrides)
    paper_depth = compose_config(f"+experiment={name}", "budget=paper", *deepest.overrides).model.depth
    assert cfg.model.depth == paper_depth and cfg.train.steps == 3
    folder = Path(run_cell(cfg))
    assert folder.name == deepest.cell
    study = load_study(folder.parent)
    assert study.cells["status"].tolist() == ["complete"], study.cells.get("message")
    # a preset without per-layer scalars (stats=none) records its depth in the Jacobian spectrum
    assert pd.concat([study.layers["layer"], study.spectra["layer"]]).astype(int).max() == paper_depth


# ----- verdicts -----------------------------------------------------------------------------------
def test_decide_uses_the_whole_interval():
    assert decide(Measurement(-2, -3, -1), BELOW, 0) == SUPPORTED
    assert decide(Measurement(2, 1, 3), BELOW, 0) == CONTRADICTED
    assert decide(Measurement(0.5, -1, 2), BELOW, 0) == INCONCLUSIVE
    assert decide(Measurement(2, 1, 3), ABOVE, 0) == SUPPORTED
    assert decide(Measurement(1, np.nan, np.nan), ABOVE, 0) == INCONCLUSIVE  # one seed: no interval
    assert decide(Measurement(-np.inf, -np.inf, -100), BELOW, 0) == SUPPORTED  # the other arm never gets there


def test_difference_is_welchs_interval():
    from scipy import stats

    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0])
    m = difference(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert m.estimate == pytest.approx(-1.5) and (m.low, m.high) == pytest.approx((ci.low, ci.high))


def _healthy_seeds(curves: pd.DataFrame) -> pd.DataFrame:
    """A ``Study.seeds`` table in which no seed of ``curves`` diverged."""
    seeds = curves.groupby(["study", "cell", "seed"])["step"].max().rename("last_healthy_step").reset_index()
    return seeds.assign(diverged_at=pd.array([None] * len(seeds), dtype="Int64"))


def _clevert_study(elu_shift: float, elu_loss: float) -> Study:
    """Three hand-made cells of the Clevert preset: ReLU and leaky ReLU have mean shift 0.3 and loss 1.0."""
    rng = np.random.default_rng(0)
    arms = {"elu": (elu_shift, elu_loss), "relu": (0.3, 1.0), "leaky_relu": (0.3, 1.0)}
    cells, curves, layers = [], [], []
    for act, (shift, loss) in arms.items():
        cell = f"he-{act}-none-mnist5k-d2w8-sgd-0000000000"
        cells.append(
            {
                "study": "s",
                "cell": cell,
                "init": "he",
                "act": act,
                "norm": "none",
                "data": "mnist5k",
                "optim": "sgd",
                "status": "complete",
                "n_seeds": 5,
                "n_diverged": 0,
            }
        )
        for seed in range(5):
            for step in (0, 50, 100):
                for layer in (1, 2):
                    layers.append(
                        {
                            "study": "s",
                            "cell": cell,
                            "seed": seed,
                            "step": step,
                            "layer": layer,
                            "stat": "unit_mean_median",
                            "value": shift + 0.01 * rng.standard_normal(),
                        }
                    )
                curves.append(
                    {
                        "study": "s",
                        "cell": cell,
                        "seed": seed,
                        "step": step,
                        "split": "train",
                        "metric": "loss",
                        "value": 2.3 if step == 0 else loss + 0.01 * rng.standard_normal(),
                    }
                )
    empty = pd.DataFrame(
        columns=["study", "cell", "seed", "step", "layer", "quantity", "region", "bin_left", "bin_right", "count"]
    )
    curves = pd.DataFrame(curves)
    return Study(
        cells=pd.DataFrame(cells),
        curves=curves,
        layers=pd.DataFrame(layers),
        hists=empty,
        seeds=_healthy_seeds(curves),
        steps=pd.DataFrame(columns=["study", "cell", "seed", "step", "loss"]),
    )


@pytest.mark.parametrize("elu_shift, elu_loss, expected", [(0.02, 0.5, SUPPORTED), (0.6, 1.5, CONTRADICTED)])
def test_clevert_claims_on_hand_made_results(elu_shift, elu_loss, expected):
    study = _clevert_study(elu_shift, elu_loss)
    verdicts = [check(claim, study) for claim in papers()["clevert2015"].claims]
    assert [v.verdict for v in verdicts] == [expected] * 4


def test_a_claim_without_its_cells_is_inconclusive():
    study = _clevert_study(0.02, 0.5)
    study = dataclasses.replace(study, cells=study.cells[study.cells["act"] != "relu"])
    verdicts = {v.claim.key: v for v in (check(c, study) for c in papers()["clevert2015"].claims)}
    assert verdicts["elu_loss_faster_than_relu"].verdict == INCONCLUSIVE
    assert "act=relu" in verdicts["elu_loss_faster_than_relu"].note
    assert verdicts["elu_loss_faster_than_leaky"].verdict == SUPPORTED


def _ioffe_curves(cell: str, reach_step: float) -> list[dict]:
    return [
        {
            "study": "s",
            "cell": cell,
            "seed": seed,
            "step": step,
            "split": "test",
            "metric": "accuracy",
            "value": 0.95 if step >= reach_step + seed % 2 * 100 else 0.5,
        }
        for seed in range(5)
        for step in range(0, 1001, 100)
    ]


@pytest.mark.parametrize(
    "bn_step, plain_step, expected", [(200, 700, SUPPORTED), (700, 200, CONTRADICTED), (200, np.inf, SUPPORTED)]
)
def test_steps_to_target_claim_on_hand_made_curves(bn_step, plain_step, expected):
    cells = pd.DataFrame(
        [
            {"study": "s", "cell": c, "norm": n, "status": "complete", "n_seeds": 5, "n_diverged": 0}
            for c, n in (("bn", "batchnorm"), ("plain", "none"))
        ]
    )
    curves = pd.DataFrame(_ioffe_curves("bn", bn_step) + _ioffe_curves("plain", plain_step))
    study = Study(
        cells=cells,
        curves=curves,
        layers=pd.DataFrame(columns=["study", "cell", "stat"]),
        hists=pd.DataFrame(),
        seeds=_healthy_seeds(curves),
        steps=pd.DataFrame(),
    )
    claim = next(c for c in papers()["ioffe2015"].claims if c.key == "bn_reaches_accuracy_sooner")
    assert check(claim, study).verdict == expected


def _unit_rows(cell: str, widen: float, shift: float) -> list[dict]:
    """Units of a last hidden layer whose 15th/85th percentiles move apart by ``widen`` and whose
    median moves by ``shift`` over training (step-0 spread 2), with a little seed-to-seed noise."""
    rng = np.random.default_rng(len(cell))
    rows = []
    for seed in range(5):
        for unit in range(8):
            for step in (0, 50, 100):
                t = step / 100 * (1 + 0.05 * rng.standard_normal())
                values = {"z_p15": -1 - widen * t, "z_p50": shift * t, "z_p85": 1 + widen * t}
                rows += [
                    {
                        "study": "s",
                        "cell": cell,
                        "seed": seed,
                        "step": step,
                        "layer": 3,
                        "unit": unit,
                        "stat": k,
                        "value": v,
                    }
                    for k, v in values.items()
                ]
    return rows


def test_ioffe_drift_is_judged_per_percentile_so_widening_is_not_a_moving_median():
    """Without BN the units only widen symmetrically: the 15th and 85th percentiles drift, the median
    does not, and the per-percentile claims say exactly that."""
    cells = pd.DataFrame(
        [
            {"study": "s", "cell": c, "norm": n, "status": "complete", "n_seeds": 5, "n_diverged": 0}
            for c, n in (("bn", "batchnorm"), ("plain", "none"))
        ]
    )
    units = pd.DataFrame(_unit_rows("bn", widen=0.05, shift=0.02) + _unit_rows("plain", widen=1.0, shift=0.02))
    empty = pd.DataFrame(columns=["study", "cell", "seed", "step"])
    study = Study(cells=cells, curves=empty, layers=empty, hists=empty, seeds=empty, steps=empty, units=units)
    verdicts = {c.key: check(c, study).verdict for c in papers()["ioffe2015"].claims if "z_p" in c.key}
    assert verdicts == {
        "z_p15_drifts_more_without_bn": SUPPORTED,
        "z_p15_stable_with_bn": SUPPORTED,
        "z_p50_drifts_more_without_bn": INCONCLUSIVE,
        "z_p50_stable_with_bn": SUPPORTED,
        "z_p85_drifts_more_without_bn": SUPPORTED,
        "z_p85_stable_with_bn": SUPPORTED,
    }


# ----- reproduce ------------------------------------------------------------------------------------
def test_reproduce_rejects_unknown_papers(capsys):
    assert reproduce_main(["nosuchpaper"]) == 2
    assert "glorot2010" in capsys.readouterr().err


def test_paper_budget_fails_on_missing_files_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert reproduce_main(["ioffe2015", "--budget", "paper", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "data" / "mnist") in err
    assert not list((tmp_path / "results" / "ioffe2015-paper").glob("*/meta.json"))  # nothing ran


@pytest.mark.slow
def test_reproduce_writes_the_report_from_files(tmp_path):
    """Smoke budget of the smallest preset: plan, train, check, and a report with claims, tables and figures."""
    p = plan("ioffe2015", "smoke", str(tmp_path))
    for c in p.cells:
        run_cell(compose_config("+experiment=ioffe2015", "budget=smoke", f"results_dir={tmp_path}", *c.overrides))
    report, verdicts = write_reproduction(papers()["ioffe2015"], p)
    text = report.read_text()
    assert len(verdicts) == 8 and "Budget **smoke**" in text and "## Paper and ours" in text
    assert all(v.verdict == INCONCLUSIVE for v in verdicts)  # one seed: no interval, no verdict
    for spec in papers()["ioffe2015"].figures:
        assert (p.study_dir / "figures" / f"{spec.name}.png").is_file() and f"figures/{spec.name}.png" in text


def _schoenholz_study(accuracy) -> Study:
    """Hand-made cells of the schoenholz2017 grid: ``accuracy(sigma_w2, depth, six_xi_c)`` is each
    cell's final training accuracy (3 seeds, a little noise)."""
    from gradstudy import theory

    rng = np.random.default_rng(1)
    cells, curves = [], []
    for sigma_w2 in (1.0, 1.25, 1.5, 1.76, 2.25, 3.0, 4.0):
        six_xi_c = 6 * theory.depth_scales("tanh", sigma_w2, 0.05).xi_c
        for depth in (10, 20, 40, 60, 80):
            cell = f"meanfield-tanh-none-mnist5k-d{depth}w8-sgd-{int(sigma_w2 * 100):010d}"
            cells.append(
                {
                    "study": "s",
                    "cell": cell,
                    "init": "meanfield",
                    "act": "tanh",
                    "init.sigma_w2": sigma_w2,
                    "init.sigma_b2": 0.05,
                    "model.depth": depth,
                    "status": "complete",
                    "n_seeds": 3,
                    "n_diverged": 0,
                }
            )
            for seed in range(3):
                for step, value in (
                    (0, 0.1),
                    (500, accuracy(sigma_w2, depth, six_xi_c) + 0.01 * rng.standard_normal()),
                ):
                    curves.append(
                        {
                            "study": "s",
                            "cell": cell,
                            "seed": seed,
                            "step": step,
                            "split": "train",
                            "metric": "accuracy",
                            "value": value,
                        }
                    )
    curves = pd.DataFrame(curves)
    empty = pd.DataFrame(columns=["study", "cell", "seed", "step", "layer", "stat", "value"])
    return Study(
        cells=pd.DataFrame(cells),
        curves=curves,
        layers=empty,
        hists=pd.DataFrame(),
        seeds=_healthy_seeds(curves),
        steps=pd.DataFrame(columns=["study", "cell", "seed", "step", "loss"]),
    )


@pytest.mark.parametrize(
    "accuracy, expected",
    [
        (lambda w, depth, six_xi_c: 0.9 if depth < six_xi_c else 0.1, [SUPPORTED] * 4),
        (lambda w, depth, six_xi_c: 0.1, [CONTRADICTED, SUPPORTED, SUPPORTED, CONTRADICTED]),
    ],
    ids=["as_theory_says", "nothing_trains"],
)
def test_schoenholz_claims_on_hand_made_results(accuracy, expected):
    from gradstudy.papers.schoenholz2017 import agreement_table

    study = _schoenholz_study(accuracy)
    assert [check(claim, study).verdict for claim in papers()["schoenholz2017"].claims] == expected
    table = agreement_table(study)
    assert len(table) == 35 and table["predicted_trainable"].sum() == 26  # 6 xi_c: 21.8 at 1.0, 41.9 at 4.0


@pytest.mark.slow
def test_schoenholz_smoke_reproduction_draws_the_phase_diagram(tmp_path):
    """The smoke budget end to end on the grid's shallowest depth (7 cells, one program; the depth-80
    program is compiled by the one-cell test above): claims, tables and the heat map."""
    from gradstudy.run import run_cells

    p = plan("schoenholz2017", "smoke", str(tmp_path))
    base = ("+experiment=schoenholz2017", "budget=smoke", f"results_dir={tmp_path}")
    shallow = [c for c in p.cells if "model.depth=10" in c.overrides]
    assert len(shallow) == 7
    run_cells([(compose_config(*base, *c.overrides), None) for c in shallow])
    report, verdicts = write_reproduction(papers()["schoenholz2017"], p)
    text = report.read_text()
    assert len(verdicts) == 4 and "## Paper and ours" in text and "6ξ_c = 21.8" in text
    assert "7 of 35 planned cells complete" in text
    assert (p.study_dir / "figures" / "fig5_phase_diagram.png").is_file()


@pytest.mark.slow
def test_chapter11_smoke_reproduction_checks_every_statement(tmp_path):
    """The smoke budget end to end: ten arms, the latency timing, every statement's verdict and figures."""
    from gradstudy.reproduce import arm_of, write_latency
    from gradstudy.run import run_cells

    paper = papers()["chapter11"]
    p = plan("chapter11", "smoke", str(tmp_path))
    base = ("+experiment=chapter11", "budget=smoke", f"results_dir={tmp_path}")
    folders = run_cells([(compose_config(*base, *c.overrides), arm_of(c)) for c in p.cells])
    assert len(set(folders)) == 10  # no two arms compose to one cell
    write_latency(paper, p)
    report, verdicts = write_reproduction(paper, p)
    text = report.read_text()
    assert len(verdicts) == 15 and "twice the normal form" in text
    latency = {v.claim.key: v for v in verdicts if "predicts_slower" in v.claim.key}
    assert all(v.measurement is not None and v.measurement.numbers["rounds"] > 1 for v in latency.values())
    for spec in paper.figures:
        assert (p.study_dir / "figures" / f"{spec.name}.png").is_file(), spec.name


def _de2020_study(exponent: float, skipinit_accuracy: float) -> Study:
    """The three 100-block cells of the de2020 preset, made by hand: batch norm's branch/stream std
    ratio is l^exponent (times noise) at step 0; no norm ends at chance, SkipInit at ``skipinit_accuracy``."""
    rng = np.random.default_rng(1)
    arms = {"res_he_bn": 0.9, "res_he": 0.1, "res_skipinit": skipinit_accuracy}
    cells, curves, layers = [], [], []
    for arm, accuracy in arms.items():
        cell = f"{arm}-resd100-0000000000"
        cells.append({"study": "s", "cell": cell, "arm": arm, "model.depth": 100, "status": "complete", "n_seeds": 3})
        for seed in range(3):
            for block in range(1, 101):
                ratio = block**exponent * np.exp(0.05 * rng.standard_normal()) if arm == "res_he_bn" else 1.0
                row = {"study": "s", "cell": cell, "seed": seed, "step": 0, "layer": block}
                layers.append({**row, "stat": "branch_ratio", "value": ratio})
            for step, value in ((0, 0.1), (300, accuracy + 0.005 * rng.standard_normal())):
                curves.append(
                    {"study": "s", "cell": cell, "seed": seed, "step": step, "split": "test", "metric": "accuracy"}
                    | {"value": value}
                )
    empty = pd.DataFrame(
        columns=["study", "cell", "seed", "step", "layer", "quantity", "region", "bin_left", "bin_right", "count"]
    )
    curves = pd.DataFrame(curves)
    return Study(
        cells=pd.DataFrame(cells),
        curves=curves,
        layers=pd.DataFrame(layers),
        hists=empty,
        seeds=_healthy_seeds(curves),
        steps=pd.DataFrame(columns=["study", "cell", "seed", "step", "loss"]),
    )


@pytest.mark.parametrize(
    "exponent, skipinit_accuracy, expected",
    [
        (-0.5, 0.9, [SUPPORTED, SUPPORTED, SUPPORTED, SUPPORTED]),
        (-1.0, 0.1, [CONTRADICTED, SUPPORTED, SUPPORTED, CONTRADICTED]),
        (-0.1, 0.9, [SUPPORTED, CONTRADICTED, SUPPORTED, SUPPORTED]),
    ],
)
def test_de2020_claims_fit_the_slope_of_the_ratio_on_hand_made_results(exponent, skipinit_accuracy, expected):
    from gradstudy.papers.de2020 import ratio_slope

    study = _de2020_study(exponent, skipinit_accuracy)
    slopes = ratio_slope(study, ("s", "res_he_bn-resd100-0000000000"))
    np.testing.assert_allclose(slopes, exponent, atol=0.02)
    assert [check(claim, study).verdict for claim in papers()["de2020"].claims] == expected
