"""Figures read back from their axes and checked against the study's tables, on tiny versions of the
studies users run: an LR sweep with partial and full divergence, depth x norm with mixed depths, a
16-cell ``stats=full`` grid (slow), and two studies together."""

import dataclasses
import subprocess
import sys

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose_config
from matplotlib.colors import to_rgba

from gradstudy import load_study
from gradstudy.analysis.convergence import convergence_table, steps_to_target
from gradstudy.analysis.profiles import gradient_table
from gradstudy.report import main as report_main
from gradstudy.report import write_report
from gradstudy.run import run_cell, run_cells
from gradstudy.show import plots
from gradstudy.show.encoding import DPI, MAX_INCHES
from gradstudy.show.figures import REPORT_FIGURES, FigureSpec
from gradstudy.show.present import label_of

#: Saved pages may exceed the layout's limit by the tight bounding box's padding, no more.
MAX_PIXELS = MAX_INCHES * DPI + 60


@pytest.fixture(scope="module")
def depth_study(tmp_path_factory):
    """depth x norm, so that layer counts differ between panels."""
    root = tmp_path_factory.mktemp("depth")
    for depth in (2, 4):
        for norm in ("none", "batchnorm"):
            run_cell(
                compose_config(
                    *TINY, f"model.depth={depth}", f"norm={norm}", "train.seeds=2", f"results_dir={root}", "study=depth"
                )
            )
    return root / "depth"


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    cells = [
        compose_config(*TINY, f"act={act}", "train.seeds=2", f"results_dir={root}", f"study={study}")
        for study in ("first", "second")
        for act in ("relu", "tanh")
    ]
    run_cells([(cfg, None) for cfg in cells])  # a group may span studies: each cell lands in its own
    return [root / "first", root / "second"]


# ----- reading a figure back -------------------------------------------------------------------
def legend_colours(fig: plt.Figure) -> dict[str, tuple]:
    """Legend label -> colour of its line handle, asserting the labels are unique."""
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    colours = {}
    for text, handle in zip(labels, legend.legend_handles, strict=True):
        if handle.get_linestyle() not in ("None", "none", "") and handle.get_linewidth() > 1:
            assert text not in colours, f"legend entry {text!r} twice"
            colours[text] = to_rgba(handle.get_color())
    return colours


def data_lines(ax: plt.Axes) -> list:
    return [line for line in ax.get_lines() if not line.get_label().startswith("_") and line.get_marker() != "X"]


def axes_with_title(fig: plt.Figure, title: str, ylabel_start: str) -> plt.Axes:
    hits = [ax for ax in fig.axes if ax.get_title() == title and ax.get_ylabel().startswith(ylabel_start)]
    assert len(hits) == 1, (title, ylabel_start, [(a.get_title(), a.get_ylabel()) for a in fig.axes])
    return hits[0]


def diverged_marks(fig: plt.Figure) -> list[float]:
    return sorted(
        float(x) for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "X" for x in line.get_xdata()
    )


def check_learning_curves(study) -> None:
    """Every line's colour is its legend entry's, and its points are the mean over seeds of the
    curves table (each diverged seed's final, frozen-state evaluation is its ✕, not a point)."""
    plot = plots.learning_curves(study)
    (fig,) = plot.pages
    colours = legend_colours(fig)
    enc = plot.encoding
    seeds = study.seeds.set_index(["study", "cell", "seed"])["diverged_at"]
    curves = study.curves.copy()
    frozen = [
        pd.notna(seeds.get((r.study, r.cell, r.seed))) and r.step == seeds[(r.study, r.cell, r.seed)]
        for r in curves.itertuples()
    ]
    curves = curves[~np.array(frozen, bool)]
    drawn = 0
    for _, cell in study.cells.iterrows():
        title = label_of(cell, enc.col, named=True)
        hue = label_of(cell, enc.hue, named=False)
        for (split, metric), ylabel in ((("train", "loss"), "training loss"), (("test", "accuracy"), "test accuracy")):
            ax = axes_with_title(fig, title, ylabel)
            (line,) = [ln for ln in data_lines(ax) if ln.get_label() == hue]
            assert to_rgba(line.get_color()) == colours[hue]
            rows = curves[
                (curves["study"] == cell["study"])
                & (curves["cell"] == cell["cell"])
                & (curves["split"] == split)
                & (curves["metric"] == metric)
            ]
            expected = rows.groupby("step")["value"].mean()
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            np.testing.assert_allclose(x, expected.index.to_numpy(float))
            np.testing.assert_allclose(y, expected.to_numpy(), rtol=1e-6)
            drawn += 1
    assert drawn == 2 * len(study.cells)
    # one ✕ per diverged seed in each of the two measures, at the step it diverged
    diverged = study.seeds["diverged_at"].dropna().astype(float).tolist()
    assert diverged_marks(fig) == sorted(diverged * 2)
    plot.close()


def check_gradient_profile(study) -> None:
    """At step 0 each line is the gradient table's geometric mean per layer; layer ticks are integers."""
    plot = plots.gradient_profile(study)
    (fig,) = plot.pages
    colours = legend_colours(fig)
    table = gradient_table(study)
    start = table[table["phase"] == "start"]
    for _, cell in study.cells.iterrows():
        ax = axes_with_title(fig, label_of(cell, plot.encoding.col, named=True), "std of δ = B·∂L/∂z\nstart")
        hue = label_of(cell, plot.encoding.hue, named=False)
        lines = [ln for ln in data_lines(ax) if ln.get_label() == hue]
        assert len(lines) == 1 and to_rgba(lines[0].get_color()) == colours[hue]
        expected = start[(start["study"] == cell["study"]) & (start["cell"] == cell["cell"])].sort_values("layer")
        np.testing.assert_allclose(lines[0].get_ydata(), expected["delta_std_gmean"], rtol=1e-5)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    plot.close()


def check_pages_fit(folder) -> None:
    pngs = sorted(folder.glob("*.png"))
    assert pngs
    for png in pngs:
        height, width = matplotlib.image.imread(png).shape[:2]
        assert width <= MAX_PIXELS and height <= MAX_PIXELS, (png.name, width, height)


# ----- the LR sweep ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_lr_sweep_legend_colours_and_divergence_marks(lr_study):
    study = load_study(lr_study)
    check_learning_curves(study)
    check_gradient_profile(study)
    plot = plots.learning_curves(study)
    assert plot.encoding.hue == ("optim.lr",)
    colours = legend_colours(plot.pages[0])
    assert list(colours) == ["0.005", "0.07", "50"]  # numeric: ordered, one sequential colour each
    assert len(set(colours.values())) == 3
    plot.close()


def test_lr_sweep_steps_figure_tells_diverged_from_never_reached(lr_study):
    study = load_study(lr_study)
    plot = plots.steps_to_target_figure(study, target=0.5)
    (fig,) = plot.pages
    times = [ax for ax in fig.axes if ax.get_xlabel().startswith("steps to")][0]
    crosses = [ln for ln in times.get_lines() if ln.get_marker() == "X"]
    never = [ln for ln in times.get_lines() if ln.get_marker() == ">"]
    reached = [ln for ln in times.get_lines() if ln.get_marker() == "o"]
    times = steps_to_target(study.curves, 0.5).merge(study.seeds, on=["study", "cell", "seed"])
    diverged_first = times[~times["reached"] & times["diverged_at"].notna()]
    assert (
        len(reached) == times["reached"].sum() and len(never) == (~times["reached"] & times["diverged_at"].isna()).sum()
    )
    assert sorted(float(ln.get_xdata()[0]) for ln in crosses) == sorted(diverged_first["diverged_at"].astype(float))
    assert len(crosses) >= int(study.cells.set_index("optim.lr").loc[50.0, "n_seeds"])
    plot.close()


def test_lr_sweep_heatmap_hatches_after_divergence_and_says_which_scale(lr_study):
    study = load_study(lr_study)
    plot = plots.grad_norm_heatmap(study)
    (fig,) = plot.pages
    hatched = [p for ax in fig.axes for p in ax.patches if p.get_hatch()]
    diverged_cells = study.cells[study.cells["n_diverged"] > 0]
    assert len(hatched) == len(diverged_cells)
    for ax in fig.axes:  # no blank stretch between a panel's last column and its hatching
        for patch in (p for p in ax.patches if p.get_hatch()):
            mesh_end = max(c.get_coordinates()[..., 0].max() for c in ax.collections if hasattr(c, "get_coordinates"))
            assert mesh_end >= patch.get_x() + patch.get_width()
    assert any(note.startswith("Colour: one log scale") for note in plot.notes)
    assert all(
        float(t).is_integer() for ax in fig.axes if ax.get_ylabel().startswith("hidden layer") for t in ax.get_yticks()
    )
    plot.close()


@pytest.mark.slow
def test_lr_sweep_report_has_every_figure_with_captions(lr_study, tmp_path):
    report = write_report(lr_study, tmp_path, target=0.5).read_text()
    for name in (
        "steps_to_target",
        "learning_curves",
        "gradient_profile",
        "activation_profile",
        "grad_norm_heatmap",
        "activations",
        "histograms",
    ):
        assert f"![{name}" in report, name
    assert (
        "*saturation*: not drawn: none of saturated_frac, dead_frac recorded" in report
    )  # a linear net: neither applies
    assert "✕ marks where each of the" in report and "Encoding: hue=optim.lr" in report
    check_pages_fit(tmp_path / "figures")


# ----- depth x norm, mixed depths ------------------------------------------------------------------
@pytest.mark.slow
def test_depth_by_norm_compares_norms_on_one_axis(depth_study):
    study = load_study(depth_study)
    check_learning_curves(study)
    check_gradient_profile(study)
    plot = plots.learning_curves(study)
    assert plot.encoding.col == ("norm",) and plot.encoding.hue == ("model.depth",)
    plot.close()


@pytest.mark.slow
def test_mixed_depths_share_one_layer_colour_scale(depth_study):
    study = load_study(depth_study)
    plot = plots.activation_over_training(study)
    assert plot.encoding.hue == ("layer",) and plot.encoding.row == ("norm",)
    (fig,) = plot.pages
    colours = legend_colours(fig)
    assert list(colours) == ["1", "2", "3", "4"]
    for ax in fig.axes:
        for line in data_lines(ax):
            assert to_rgba(line.get_color()) == colours[line.get_label()]
    plot.close()


def test_user_encoding_and_bad_keys(depth_study):
    study = load_study(depth_study)
    plot = plots.learning_curves(study, hue="norm", col="model.depth")
    titles = {ax.get_title() for ax in plot.pages[0].axes if ax.has_data()}
    assert titles == {"model.depth=2", "model.depth=4"}
    assert set(legend_colours(plot.pages[0])) == {"batchnorm", "none"}
    plot.close()
    plot = plots.gradient_profile(study, hue="norm", style="model.depth")
    assert plot.encoding.style == ("model.depth",) and {
        ln.get_linestyle() for ax in plot.pages[0].axes for ln in data_lines(ax)
    } == {"-", "--"}
    plot.close()
    with pytest.raises(ValueError, match="valid keys: .*model.depth"):
        plots.learning_curves(study, hue="model.dpeth")
    with pytest.raises(ValueError, match="col= and row="):
        plots.grad_norm_heatmap(study, hue="norm")
    heatmap = plots.grad_norm_heatmap(study, row="norm")  # the key left unplaced still separates the cells
    assert heatmap.encoding.row == ("norm",) and heatmap.encoding.col == ("model.depth",)
    heatmap.close()


@pytest.mark.slow
def test_report_command_takes_the_encoding(depth_study, tmp_path, capsys):
    assert (
        report_main([str(depth_study), "--out", str(tmp_path), "--hue", "norm", "--col", "model.depth", "--dpi", "60"])
        == 0
    )
    text = (tmp_path / "report.md").read_text()
    assert "Encoding: hue=norm, col=model.depth" in text
    assert "| norm | model.depth |" in text or "| model.depth | norm |" in text
    assert report_main([str(depth_study), "--out", str(tmp_path), "--hue", "bogus"]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_exact_zeros_are_marked_at_the_floor_and_counted(depth_study):
    study = load_study(depth_study)
    layers = study.layers.copy()
    first = study.cells["cell"].iloc[0]
    layers.loc[(layers["cell"] == first) & (layers["stat"] == "delta_std") & (layers["step"] == 0), "value"] = 0.0
    zeroed = dataclasses.replace(study, layers=layers)
    plot = plots.gradient_profile(zeroed)
    depth = int(study.cells.set_index("cell").loc[first, "model.depth"])
    floor = [ln for ax in plot.pages[0].axes for ln in ax.get_lines() if ln.get_marker() == "v"]
    assert sum(len(ln.get_xdata()) for ln in floor) == depth
    assert f"{depth} value(s) exactly 0 drawn as ▽" in " ".join(plot.notes)
    plot.close()


def test_pages_split_a_figure_taller_than_the_limit(depth_study, tmp_path):
    study = load_study(depth_study)
    plot = plots.gradient_profile(
        study, col=["norm", "model.depth"], wrap=1
    )  # 4 cells x 4 measures = 16 lines of panels
    assert len(plot.pages) > 1
    paths = plot.save(tmp_path, "profile")
    assert [p.name for p in paths] == [f"profile_p{i}.png" for i in range(1, len(paths) + 1)]
    check_pages_fit(tmp_path)


# ----- two studies together ------------------------------------------------------------------------
@pytest.mark.slow
def test_two_studies_report_together(two_studies, tmp_path):
    both = load_study(two_studies)
    check_learning_curves(both)
    check_gradient_profile(both)
    plot = plots.learning_curves(both)
    assert "study" in plot.encoding.col + plot.encoding.hue
    plot.close()
    with pytest.raises(ValueError, match="--out"):
        write_report(two_studies)
    report = write_report(two_studies, tmp_path).read_text()
    assert report.startswith("# gradstudy report: first + second") and "| study |" in report
    check_pages_fit(tmp_path / "figures")


# ----- 16 cells, full statistics ------------------------------------------------------------------
@pytest.mark.slow
def test_sixteen_cell_full_grid_is_legible(tmp_path):
    cells = [
        compose_config(
            *TINY,
            f"act={act}",
            f"init={init}",
            f"init.scale={scale}",
            "stats=full",
            "train.seeds=2",
            "train.steps=10",
            "train.eval_every=5",
            "model.depth=2",
            "model.width=8",
            f"results_dir={tmp_path}",
            "study=g16",
        )
        for act in ("relu", "tanh")
        for init in ("xavier", "he")
        for scale in (0.5, 1.0, 2.0, 4.0)
    ]
    run_cells([(cfg, None) for cfg in cells])
    study = load_study(tmp_path / "g16")
    assert len(study.cells) == 16
    check_learning_curves(study)
    check_gradient_profile(study)
    plot = plots.learning_curves(study)
    assert plot.encoding.col == ("act",) and set(plot.encoding.hue) == {"init", "init.scale"}
    assert len(set(legend_colours(plot.pages[0]).values())) == 8  # 8 hue levels, 8 distinct colours
    plot.close()
    report = write_report(tmp_path / "g16", tmp_path / "out", target=0.5).read_text()
    assert "![histograms" in report and "![activation_profile" in report
    check_pages_fit(tmp_path / "out" / "figures")


# ----- the presentation layer --------------------------------------------------------------------
def test_figure_spec_skips_with_a_reason(lr_study):
    study = load_study(lr_study)
    spec = FigureSpec("x", "caption", plots.layer_histograms, ("hists",), where={"optim__lr": 123.0})
    assert spec.missing(study) == "no complete cell with optim.lr=123.0"
    assert (
        FigureSpec("y", "c", plots.saturation_over_training, ("layers",), ("dead_frac",))
        .missing(study)
        .startswith("none of dead_frac")
    )
    assert (
        FigureSpec("z", "c", plots.layer_histograms, ("hists",)).missing(
            dataclasses.replace(study, hists=study.hists.iloc[:0])
        )
        == "no histograms (they need stats=full)"
    )
    assert {s.name for s in REPORT_FIGURES} >= {"activation_profile", "gradient_profile", "learning_curves"}


def test_plots_leave_the_backend_alone():
    code = "import matplotlib; matplotlib.use('svg'); import gradstudy.show.plots, gradstudy.report; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


@pytest.mark.slow
def test_an_arm_is_a_key_that_stands_for_its_choices(tmp_path):
    arms = ("tanh_xavier", "relu_he", "relu_bn")
    for arm in arms:
        run_cell(
            compose_config(
                *TINY, f"+arm={arm}", "train.seeds=1", "train.steps=5", f"results_dir={tmp_path}", "study=arms"
            ),
            arm=arm,
        )
    study = load_study(tmp_path / "arms")
    cells = study.cells.set_index("arm")
    assert sorted(cells.index) == sorted(arms)
    assert tuple(cells.loc["tanh_xavier", ["act", "init", "norm"]]) == ("tanh", "xavier", "none")
    assert tuple(cells.loc["relu_he", ["act", "init", "norm"]]) == ("relu", "he", "none")
    # a table keeps the choices an arm makes, so a notebook can group by them; a label needs the arm alone
    assert study.varying_keys == ["arm", "init", "act", "norm"]
    assert study.label_keys == ["arm"]
    assert list(convergence_table(study, 0.5).columns[:4]) == ["arm", "init", "act", "norm"]
    plot = plots.learning_curves(study)
    assert plot.encoding.hue == ("arm",) and set(legend_colours(plot.pages[0])) == set(arms)
    plot.close()


def test_legend_texts_do_not_repeat_their_glyphs(lr_study):
    study = load_study(lr_study)
    for draw in (plots.learning_curves, plots.gradient_profile, lambda s: plots.steps_to_target_figure(s, target=0.5)):
        plot = draw(study)
        texts = [t.get_text() for fig in plot.pages for legend in fig.legends for t in legend.get_texts()]
        assert texts and not any(t[:1] in "✕▽●▷◆⊘↑" for t in texts if t), texts
        plot.close()


def test_a_one_column_figure_leaves_no_room_for_marks_it_did_not_draw(lr_study):
    """One cell, no divergence, no zeros: the figure is its panel column and a narrow legend."""
    study = load_study(lr_study).select(optim__lr=0.005)
    plot = plots.learning_curves(study)
    (fig,) = plot.pages
    legend_room = fig.get_figwidth() - fig.axes[0].get_gridspec().ncols * 3.6
    assert legend_room <= 0.25 * fig.get_figwidth(), legend_room
    plot.close()


@pytest.mark.slow
def test_the_report_shows_the_config_of_its_tables_first_cell(lr_study, tmp_path):
    report = write_report(lr_study, tmp_path, target=0.5).read_text()
    first = pd.read_csv(tmp_path / "convergence.csv")["cell"].iloc[0]
    assert f"Config of the tables' first cell (`{first}`" in report


# ----- learning-rate schedules ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def schedule_study(tmp_path_factory):
    """optim.lr x optim.schedule: two constant rates and the same two as warmup-cosine peaks."""
    root = tmp_path_factory.mktemp("schedules")
    cells = [
        (compose_config(*TINY, f"optim.lr={lr}", *schedule, "train.seeds=2", f"results_dir={root}", "study=s"), None)
        for lr in (0.05, 0.1)
        for schedule in ((), ("optim.schedule=warmup_cosine", "optim.warmup_steps=10"))
    ]
    run_cells(cells)
    return root / "s"


def rate_lines(fig: plt.Figure) -> list[tuple[str, list]]:
    """(title, the learning-rate lines of its right-hand axis) of each titled panel."""
    twins = [ax for ax in fig.axes if ax.get_ylabel() == "learning rate / peak"]
    return [
        (ax.get_title(), [ln for twin in twins if twin.get_shared_x_axes().joined(ax, twin) for ln in twin.get_lines()])
        for ax in fig.axes
        if ax.get_title()
    ]


@pytest.mark.slow
def test_learning_curves_draw_each_line_s_learning_rate_under_it(schedule_study):
    study = load_study(schedule_study)
    assert study.varying_keys == ["optim.lr", "optim.schedule"]
    check_learning_curves(study)
    plot = plots.learning_curves(study)
    (fig,) = plot.pages
    enc = plot.encoding
    rates = study.steps.drop_duplicates(["study", "cell", "step"])
    checked = 0
    for _, cell in study.cells[study.cells["optim.schedule"] == "warmup_cosine"].iterrows():
        title = label_of(cell, enc.col, named=True)
        colour = legend_colours(fig)[label_of(cell, enc.hue, named=False)]
        for ax_title, lines in rate_lines(fig):
            if ax_title != title:
                continue
            (line,) = [ln for ln in lines if to_rgba(ln.get_color())[:3] == colour[:3]]
            expected = rates[rates["cell"] == cell["cell"]].set_index("step")["lr"] / cell["optim.lr"]
            np.testing.assert_array_equal(line.get_xdata(), expected.index.to_numpy())
            np.testing.assert_allclose(line.get_ydata(), expected.to_numpy(), rtol=1e-6)
            checked += 1
    assert checked == 2 * 2  # each scheduled cell in its loss panel and its accuracy panel; constant ones have none
    assert sum(len(lines) for _, lines in rate_lines(fig)) == checked
    assert "learning rate / its peak\n(faint, right axis)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("as a fraction of its peak" in note for note in plot.notes)
    steps = plots.steps_to_target_figure(study, target=0.5, hue=["optim.lr", "optim.schedule"])
    names = {t.get_text() for ax in steps.pages[0].axes for t in ax.get_yticklabels()}
    assert {"0.05 | constant", "0.1 | warmup_cosine"} <= names  # values alone, in the y label's order
    steps.close()
    plot.close()


def test_learning_curves_draw_no_rate_when_every_rate_is_constant(lr_study):
    plot = plots.learning_curves(load_study(lr_study))
    assert not any(ax.get_ylabel() == "learning rate / peak" for ax in plot.pages[0].axes)
    plot.close()


@pytest.mark.slow
def test_the_report_says_when_lr_and_schedule_both_vary(schedule_study, tmp_path):
    from gradstudy.cells.schedules import learning_rates

    report = write_report(schedule_study, tmp_path).read_text()
    cfg = compose_config(*TINY, "optim.schedule=warmup_cosine", "optim.warmup_steps=10")
    share = learning_rates(cfg.optim, cfg.train.steps).mean() / cfg.optim.lr
    assert "optim.lr and optim.schedule both vary" in report
    assert f"constant 1.00, warmup_cosine {share:.2f}" in report
