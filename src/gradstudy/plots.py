"""Figures: one function per figure; each takes tidy DataFrames and returns a matplotlib Figure.

Cells are labelled by the config values that vary across the study (``cell_labels``). Activation and
normalization become facets when they vary; everything else that varies goes into the hue label,
so two cells never share a colour in one panel. Nothing here computes statistics that
``gradstudy.analysis`` already does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.ticker import SymmetricalLogLocator

from gradstudy import store
from gradstudy.analysis import KEY, steps_to_target
from gradstudy.store import cell_keys, rows_of

FACET_KEYS = ("act", "norm")
STEP_LABEL = "step (parameter updates)"
LAYER_LABEL = "hidden layer (1 = next to the input)"


def cell_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell: ``facet`` (activation and norm, when they vary) and ``label`` (the other varying values)."""
    return store.cell_labels(cells, FACET_KEYS)


def _with_labels(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    return frame.merge(cell_labels(cells), on=KEY)


def _grid(n_rows: int, n_cols: int, width: float = 4.2, height: float = 3.2, **kw) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False, **kw)
    return fig, axes


def _finish(fig: plt.Figure, axes: np.ndarray, title: str) -> plt.Figure:
    """One shared legend to the right of the panels, a title, and a layout without overlaps."""
    handles = {}
    for ax in axes.flat:
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", frameon=False)
    fig.suptitle(title)
    return fig


def learning_curves(curves: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Training loss and test accuracy against step, mean over seeds with a 95% bootstrap band."""
    data = _with_labels(curves, cells)
    facets = sorted(data["facet"].unique())
    panels = [("train", "loss", "training loss (cross-entropy, nats)", True), ("test", "accuracy", "test accuracy (fraction)", False)]
    fig, axes = _grid(len(panels), len(facets), layout="constrained")
    for j, facet in enumerate(facets):
        for i, (split, metric, ylabel, log) in enumerate(panels):
            ax = axes[i, j]
            rows = data[(data["facet"] == facet) & (data["split"] == split) & (data["metric"] == metric)]
            sns.lineplot(rows, x="step", y="value", hue="label", errorbar=("ci", 95), n_boot=200, seed=0, ax=ax)
            ax.set(xlabel=STEP_LABEL, ylabel=ylabel, title=facet)
            if log:
                ax.set_yscale("log")
    return _finish(fig, axes, "Learning curves (mean over seeds, 95% CI band)")


def _phase_rows(layers: pd.DataFrame) -> pd.DataFrame:
    """Each cell's rows at step 0 ("start") and at its last measured step ("end")."""
    last = layers.groupby(KEY)["step"].transform("max")
    return pd.concat(
        [layers[layers["step"] == 0].assign(phase="start (step 0)"), layers[layers["step"] == last].assign(phase="end")],
        ignore_index=True,
    )


def _layer_profile(layers: pd.DataFrame, cells: pd.DataFrame, stats: Sequence[tuple[str, str, str]], title: str) -> plt.Figure:
    """Rows: ``stats`` (name, label, y scale); columns: facet x (start, end); one line per cell against layer."""
    data = _with_labels(_phase_rows(layers[layers["stat"].isin([s for s, _, _ in stats])]), cells)
    columns = [(f, p) for f in sorted(data["facet"].unique()) for p in ("start (step 0)", "end")]
    fig, axes = _grid(len(stats), len(columns), layout="constrained")
    for j, (facet, phase) in enumerate(columns):
        for i, (stat, ylabel, yscale) in enumerate(stats):
            ax = axes[i, j]
            rows = data[(data["facet"] == facet) & (data["phase"] == phase) & (data["stat"] == stat)]
            sns.lineplot(rows, x="layer", y="value", hue="label", marker="o", errorbar=("ci", 95), n_boot=200, seed=0, ax=ax)
            ax.set(xlabel=LAYER_LABEL, ylabel=ylabel, title=f"{facet}\n{phase}", yscale=yscale)
    return _finish(fig, axes, title)


def gradient_profile(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Back-propagated gradient std and weight-gradient norm against layer, at the start and the end (log scale)."""
    stats = [("delta_std", "std of δ = B·∂L/∂z (log)", "log"), ("grad_norm", "‖∂L/∂W‖ (log)", "log")]
    return _layer_profile(layers, cells, stats, "Gradient profile across layers (Glorot & Bengio fig. 7 style)")


def activation_profile(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Mean (linear scale) and standard deviation (log scale) of the activations against layer, at the start and the end."""
    stats = [("act_mean", "activation mean", "linear"), ("act_std", "activation std (log)", "log")]
    return _layer_profile(layers, cells, stats, "Activation profile across layers")


def _cell_panels(cells: pd.DataFrame, n_rows: int = 1, max_cols: int = 4, **kw) -> tuple[plt.Figure, np.ndarray, list]:
    ids = cell_keys(cells)
    n_cols = min(max_cols, len(ids))
    blocks = int(np.ceil(len(ids) / n_cols))
    fig, axes = _grid(n_rows * blocks, n_cols, layout="constrained", **kw)
    return fig, axes, ids


def _cell_title(cells: pd.DataFrame, cell: tuple[str, str]) -> str:
    labels = cell_labels(cells).set_index(KEY)
    facet, label = labels.loc[cell, "facet"], labels.loc[cell, "label"]
    return label if facet == "all cells" else f"{label}\n{facet}"


def grad_norm_heatmap(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Layer × step map of ‖∂L/∂W‖ (geometric mean over seeds, log colour scale), one panel per cell."""
    data = layers[layers["stat"] == "grad_norm"]
    fig, axes, ids = _cell_panels(cells)
    positive = data["value"][data["value"] > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if len(positive) else None
    mesh = None
    for ax, cell in zip(axes.flat, ids):
        rows = rows_of(data, cell)
        grid = rows.assign(log=np.log(rows["value"].clip(lower=1e-30))).pivot_table(index="layer", columns="step", values="log")
        if grid.empty:
            ax.set_axis_off()
            continue
        mesh = ax.pcolormesh(grid.columns, grid.index, np.exp(grid.to_numpy()), norm=norm, cmap="viridis", shading="nearest")
        ax.set(xlabel=STEP_LABEL, ylabel=LAYER_LABEL, title=_cell_title(cells, cell))
    for ax in list(axes.flat)[len(ids):]:
        ax.set_axis_off()
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="‖∂L/∂W‖ (log scale)")
    fig.suptitle("Weight-gradient norm by layer and step")
    return fig


def _per_layer_over_steps(layers: pd.DataFrame, cells: pd.DataFrame, stats: Sequence[tuple[str, str]], title: str) -> plt.Figure:
    """Rows: ``stats``; columns: cells; one line per layer (mean over seeds)."""
    ids = cell_keys(cells)
    fig, axes = _grid(len(stats), len(ids), layout="constrained")
    for j, cell in enumerate(ids):
        for i, (stat, ylabel) in enumerate(stats):
            ax = axes[i, j]
            rows = rows_of(layers, cell)
            rows = rows[rows["stat"] == stat]
            if rows["value"].notna().any():
                sns.lineplot(rows, x="step", y="value", hue="layer", palette="viridis", errorbar=None, legend="full", ax=ax)
            ax.set(xlabel=STEP_LABEL, ylabel=ylabel, title=_cell_title(cells, cell))
    return _finish(fig, axes, title)


def activation_over_training(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Mean and standard deviation of each layer's activations over training (Glorot & Bengio fig. 2 style)."""
    return _per_layer_over_steps(
        layers, cells, [("act_mean", "activation mean"), ("act_std", "activation std")],
        "Activations per layer over training (mean over seeds)",
    )


def unit_mean_median_over_training(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Median over units of each unit's batch-mean activation, per layer over training (Clevert et al. 2015's mean shift)."""
    return _per_layer_over_steps(
        layers, cells, [("unit_mean_median", "median over units of the mean activation")],
        "Mean shift of the activations per layer (mean over seeds)",
    )


def saturation_over_training(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Saturated and dead fractions per layer over training (only the statistics defined for the activation)."""
    present = [s for s in ("saturated_frac", "dead_frac") if layers.loc[layers["stat"] == s, "value"].notna().any()]
    labels = {"saturated_frac": "saturated fraction (of unit·examples)", "dead_frac": "dead fraction (of units)"}
    return _per_layer_over_steps(
        layers, cells, [(s, labels[s]) for s in present or ["saturated_frac"]], "Saturated and dead units per layer"
    )


def preactivation_percentiles(layers: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """15th, 50th and 85th percentiles of the first and last hidden layers' pre-activation (Ioffe & Szegedy fig. 1)."""
    data = layers[layers["stat"].isin(["z_p15", "z_p50", "z_p85"])]
    ids = cell_keys(cells)
    fig, axes = _grid(2, len(ids), layout="constrained", sharey="row")
    for j, cell in enumerate(ids):
        rows = rows_of(data, cell)
        depth = int(rows_of(layers, cell)["layer"].max())
        for i, layer in enumerate((1, depth)):
            ax = axes[i, j]
            sns.lineplot(rows[rows["layer"] == layer], x="step", y="value", hue="stat", errorbar=("ci", 95), n_boot=200, seed=0, ax=ax)
            ax.set(xlabel=STEP_LABEL, ylabel=f"z percentiles, layer {layer}", title=_cell_title(cells, cell))
    return _finish(fig, axes, "Pre-activation percentiles over training (mean over seeds)")


def histograms(hists: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure:
    """Per-layer histograms of activations and back-propagated gradients, summed over seeds (fig. 6 style).

    Rows: cells; columns: (quantity, step). The y axis is the fraction of a layer's entries in each
    bin (zeros and out-of-range values count in the total), on a log scale so that tails stay
    visible. Signed-log bins (δ, unbounded activations) are drawn on a symmetric-log x axis whose
    linear part is the range's smallest magnitude.
    """
    present = set(zip(hists["study"], hists["cell"], strict=True))
    ids = [c for c in cell_keys(cells) if c in present]
    columns = [(q, s) for q in ("activation", "delta") for s in sorted(hists["step"].unique())]
    fig, axes = _grid(len(ids), len(columns), layout="constrained")
    for i, cell in enumerate(ids):
        for j, (quantity, step) in enumerate(columns):
            ax = axes[i, j]
            rows = rows_of(hists, cell)
            rows = rows[(rows["quantity"] == quantity) & (rows["step"] == step)]
            totals = rows.groupby("layer")["count"].sum()
            summed = rows[rows["region"] == "bin"].groupby(["layer", "bin_left", "bin_right"], as_index=False)["count"].sum()
            summed["center"] = (summed["bin_left"] + summed["bin_right"]) / 2
            summed["fraction"] = summed["count"] / summed["layer"].map(totals)
            if summed.empty:
                ax.text(0.5, 0.5, "no finite seed at this step", ha="center", va="center", transform=ax.transAxes)
            else:
                sns.lineplot(summed[summed["fraction"] > 0], x="center", y="fraction", hue="layer", palette="viridis", ax=ax)
                widths = summed["bin_right"] - summed["bin_left"]
                if widths.max() > 1.5 * widths.min():  # signed-log bins
                    linthresh = float(summed["bin_right"].abs().min())
                    ax.set_xscale("symlog", linthresh=linthresh)
                    ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=linthresh, base=1000))
            xlabel = "activation value" if quantity == "activation" else "δ = B·∂L/∂z"
            ax.set(xlabel=xlabel, ylabel="fraction per bin (log)", yscale="log", title=f"{_cell_title(cells, cell)}\n{quantity}, step {step}")
    return _finish(fig, axes, "Activation and back-propagated gradient histograms per layer")


def steps_to_target_figure(curves: pd.DataFrame, cells: pd.DataFrame, convergence: pd.DataFrame,
                           target: float, metric: str = "accuracy", split: str = "test") -> plt.Figure:
    """Left: steps to target per cell (lower median, bootstrap 95% CI; ▲ = not reached by half the seeds).
    Right: the fraction of seeds that have not yet reached the target, against step."""
    labels = cell_labels(cells).set_index(KEY)
    names = {c: f"{labels.loc[c, 'label']} | {labels.loc[c, 'facet']}" if labels.loc[c, "facet"] != "all cells" else labels.loc[c, "label"] for c in labels.index}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * len(convergence) + 3), layout="constrained")
    final = curves["step"].max()
    conv = convergence.assign(name=[names[k] for k in cell_keys(convergence)]).reset_index(drop=True)
    for y, row in conv.iterrows():
        if np.isfinite(row["steps_to_target"]):
            low = row["steps_low"] if np.isfinite(row["steps_low"]) else row["steps_to_target"]
            high = row["steps_high"] if np.isfinite(row["steps_high"]) else final
            left.errorbar(row["steps_to_target"], y, xerr=[[row["steps_to_target"] - low], [high - row["steps_to_target"]]], fmt="o", capsize=4, color="C0")
        else:
            left.plot(final, y, marker=">", color="C3")
        left.annotate(f"{row['n_reached']}/{row['n_healthy']}", (0, y), xytext=(4, 6), textcoords="offset points", fontsize=8)
    left.set_yticks(range(len(conv)), conv["name"])
    left.set(ylabel="cell", xlabel=f"steps to {split} {metric} {'≥' if metric == 'accuracy' else '≤'} {target}", xlim=(0, final * 1.05), title="median and 95% CI (n reached / n healthy seeds)")
    times = steps_to_target(curves, target, metric, split)
    steps = np.sort(curves["step"].unique())
    for cell, g in times.groupby(KEY):
        remaining = [(g["step"] > s).mean() for s in steps]
        right.step(steps, remaining, where="post", label=names.get(cell, cell))
    right.set(xlabel=STEP_LABEL, ylabel="fraction of seeds not yet at target", ylim=(-0.02, 1.02), title="survival curve")
    right.legend(frameon=False, fontsize=8)
    fig.suptitle(f"Convergence speed: {split} {metric} target {target}")
    return fig


def save_figure(fig: plt.Figure, folder: Path, name: str, formats: Sequence[str] = ("png",), dpi: int = 120) -> list[Path]:
    """Write ``fig`` as ``folder/name.<fmt>`` for each format, then close it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths
