"""``python -m gradstudy.report results/<study> [--out DIR]``: tables, figures and ``report.md``.

Reads only files. Works on a study that is still running or has diverged seeds: it reports the
complete cells and lists the others as missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from gradstudy import analysis, plots
from gradstudy.store import CONFIG, Study, load_study, read_meta

#: (file name, one line saying what the figure shows, builder, whether it applies to the study)
Figure = tuple[str, str, Callable[[Study, pd.DataFrame], object], Callable[[Study], bool]]


def _has_stat(study: Study, stat: str) -> bool:
    return bool(study.layers["stat"].eq(stat).any())


FIGURES: list[Figure] = [
    ("learning_curves", "Training loss and test accuracy against step, mean over seeds with a 95% CI band.",
     lambda s, c: plots.learning_curves(s.curves, s.cells), lambda s: not s.curves.empty),
    ("gradient_profile", "Std of the back-propagated gradient δ and the weight-gradient norm per layer at the start and the end: a slope means vanishing or exploding gradients.",
     lambda s, c: plots.gradient_profile(s.layers, s.cells), lambda s: _has_stat(s, "delta_std")),
    ("grad_norm_heatmap", "Weight-gradient norm by layer and step, one panel per cell.",
     lambda s, c: plots.grad_norm_heatmap(s.layers, s.cells), lambda s: _has_stat(s, "grad_norm")),
    ("activations", "Mean and std of each layer's activations over training.",
     lambda s, c: plots.activation_over_training(s.layers, s.cells), lambda s: _has_stat(s, "act_mean")),
    ("saturation", "Saturated (bounded activations) and dead (ReLU) fractions per layer over training.",
     lambda s, c: plots.saturation_over_training(s.layers, s.cells),
     lambda s: bool(s.layers[s.layers["stat"].isin(["saturated_frac", "dead_frac"])]["value"].notna().any())),
    ("histograms", "Histograms of activations and of δ per layer at the recorded steps (full statistics tier).",
     lambda s, c: plots.histograms(s.hists, s.cells), lambda s: not s.hists.empty),
    ("preactivation_percentiles", "15th/50th/85th percentiles of the first and last layers' pre-activation over training.",
     lambda s, c: plots.preactivation_percentiles(s.layers, s.cells), lambda s: _has_stat(s, "z_p50")),
]


def _steps_figure(target: float, metric: str, split: str) -> Figure:
    return (
        "steps_to_target",
        f"Steps until {split} {metric} reaches {target}: median over seeds with a bootstrap CI, and the fraction of seeds not there yet.",
        lambda s, c: plots.steps_to_target_figure(s.curves, s.cells, c, target, metric, split),
        lambda s: not s.curves.empty,
    )


ZERO_MAGNITUDE = "0 (below float32 range or exactly zero)"


def _markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    shown = frame[[c for c in columns if c in frame.columns]]
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join(
        "| " + " | ".join(_fmt(v, c) for c, v in zip(shown.columns, row, strict=True)) + " |\n"
        for row in shown.itertuples(index=False)
    )
    return header + body


def _fmt(value: object, column: str = "") -> str:
    if isinstance(value, float):
        if value == 0 and column.endswith("_gmean"):
            return ZERO_MAGNITUDE
        return "∞" if value == float("inf") else "–" if value != value else f"{value:.4g}"
    return str(value)


def _header(study_dir: Path, study: Study) -> str:
    complete = study.cells[study.cells["status"] == "complete"]
    first = Path(complete["path"].iloc[0]) if len(complete) else None
    meta = read_meta(first) if first else {}
    lines = [f"# gradstudy report: {study_dir.name}", ""]
    lines.append(f"{len(complete)} complete cell(s) of {len(study.cells)}; seeds per cell: "
                 f"{', '.join(str(n) for n in sorted(set(complete['n_seeds'])))}.")
    if meta:
        versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
        lines.append(f"Code {meta.get('git_hash') or 'unknown revision'}; {versions}; device {meta.get('device', {}).get('kind')}.")
    hashes = complete["code_hash"].fillna("unknown").value_counts()
    if len(hashes) > 1:
        counts = ", ".join(f"`{h}` ({n} cells)" for h, n in hashes.items())
        lines += ["", f"**Warning: this study mixes cells made by different code** (code_hash {counts}); "
                      "rerun the older cells with force=true before comparing them."]
    missing = study.cells[study.cells["status"] != "complete"]
    if len(missing):
        lines += ["", "Missing (not complete):", ""]
        lines += [f"- `{r.cell}`: {r.status}" for r in missing.itertuples()]
    if first is not None:
        lines += ["", "Config of the first cell:", "", "```yaml", (first / CONFIG).read_text().rstrip(), "```"]
    return "\n".join(lines)


def write_report(study_dir: Path, out: Path | None = None, formats: tuple[str, ...] = ("png",), dpi: int = 120,
                 target: float = 0.9, metric: str = "accuracy", split: str = "test") -> Path:
    """Write figures/, the tables as CSV and report.md for ``study_dir``; returns the report's path."""
    study = load_study(study_dir)
    if study.cells.empty:
        raise FileNotFoundError(f"{study_dir} holds no gradstudy cells (no <cell>/meta.json); point at results/<study>")
    out = Path(out) if out else Path(study_dir)
    figures_dir = out / "figures"
    convergence = analysis.convergence_table(study, target, metric, split)
    gradients = analysis.gradient_table(study)
    keys = study.varying_keys
    out.mkdir(parents=True, exist_ok=True)
    convergence.to_csv(out / "convergence.csv", index=False)
    gradients.to_csv(out / "gradients.csv", index=False)
    sections = [_header(Path(study_dir), study)]
    if convergence.empty:
        sections.append("\nNo complete cell yet: no tables or figures.")
    else:
        sections += ["", "## Convergence", "",
                     f"Steps to {split} {metric} {target} (lower median over the healthy seeds and bootstrap 95% CI; ∞ = fewer than half of them reached it), "
                     "area under the training loss, and final metrics (mean and 95% t interval over the seeds that did not diverge). "
                     "A cell whose seeds all diverged has outcome `diverged` and no final metrics.", "",
                     _markdown_table(convergence, [*keys, "cell", "outcome", "steps_to_target", "steps_low", "steps_high", "n_reached", "n_healthy",
                                                   "train_loss_auc_mean", "train_loss_mean", "test_loss_mean", "test_accuracy_mean",
                                                   "test_accuracy_low", "test_accuracy_high", "n_seeds", "n_diverged"])]
    if not gradients.empty:
        ratios = gradients.drop_duplicates(["study", "cell", "phase"])
        sections += ["", "## Gradients", "",
                     "First-to-last hidden layer ratios of δ std and of the weight-gradient norm (geometric mean over seeds and the 95% t interval "
                     "of the logs mapped back; below 1 the gradients shrink towards the input). `end` is the last measured step of the healthy seeds. "
                     f"A ratio of exactly 0 shows as {ZERO_MAGNITUDE}; `_n_zero` counts such seeds. Per-layer values are in gradients.csv.", "",
                     _markdown_table(ratios, [*keys, "cell", "phase", "step", "delta_std_ratio_gmean", "delta_std_ratio_low", "delta_std_ratio_high",
                                              "delta_std_ratio_n_zero", "grad_norm_ratio_gmean", "grad_norm_ratio_low", "grad_norm_ratio_high",
                                              "grad_norm_ratio_n_zero"])]
    complete = dataclasses.replace(study, cells=study.cells[study.cells["status"] == "complete"])
    figures = [_steps_figure(target, metric, split), *FIGURES]
    if not complete.cells.empty:
        sections += ["", "## Figures"]
        for name, caption, build, applies in figures:
            if not applies(complete):
                continue
            paths = plots.save_figure(build(complete, convergence), figures_dir, name, formats, dpi)
            sections += ["", f"![{name}]({paths[0].relative_to(out)})", "", caption]
    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradstudy.report", description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a study folder, e.g. results/default")
    parser.add_argument("--out", type=Path, help="write here instead of inside the study")
    parser.add_argument("--format", nargs="+", default=["png"], choices=["png", "pdf", "svg"], help="figure formats")
    parser.add_argument("--dpi", type=int, default=120)
    parser.add_argument("--target", type=float, default=0.9, help="the target for steps-to-target (default 0.9)")
    parser.add_argument("--metric", choices=["accuracy", "loss"], default="accuracy")
    parser.add_argument("--split", choices=["train", "test"], default="test")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.study, args.out, tuple(args.format), args.dpi, args.target, args.metric, args.split)
    except FileNotFoundError as err:
        print(f"gradstudy.report: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
