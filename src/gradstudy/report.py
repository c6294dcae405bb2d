"""``python -m gradstudy.report results/<study> [results/<other> ...] [--out DIR] [--hue KEY] [--col KEY] ...``:
tables, figures and ``report.md``.

Reads only files. Works on a study that is still running or has diverged seeds: it reports the
complete cells and lists the others as missing. Several studies are reported together (``--out``
is then required); ``study`` becomes one of the keys that tell cells apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradstudy import analysis
from gradstudy.analysis.comparability import grid_warnings
from gradstudy.analysis.predictions import Predictions, predicted_layers
from gradstudy.schema import CONFIG, KEY, CellStatus
from gradstudy.show.encoding import DPI, study_keys
from gradstudy.show.figures import REPORT_FIGURES, FigureSpec, steps_figure
from gradstudy.show.present import ZERO_MAGNITUDE, markdown_table
from gradstudy.store.files import read_meta
from gradstudy.store.outcomes import outcome_text
from gradstudy.store.study import Study, load_study


def _header(title: str, study: Study) -> str:
    complete = study.cells[study.cells["status"] == CellStatus.COMPLETE]
    ordered = study.sorted_cells()
    ordered = ordered[ordered["status"] == CellStatus.COMPLETE]
    first = Path(ordered["path"].iloc[0]) if len(ordered) else None
    meta = read_meta(first) if first else {}
    lines = [f"# gradstudy report: {title}", ""]
    lines.append(
        f"{len(complete)} complete cell(s) of {len(study.cells)}; seeds per cell: "
        f"{', '.join(str(n) for n in sorted(set(complete['n_seeds'])))}."
    )
    if meta:
        versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
        lines.append(
            f"Code {meta.get('git_hash') or 'unknown revision'}; {versions}; device {meta.get('device', {}).get('kind')}."
        )
    hashes = complete["code_hash"].fillna("unknown").value_counts()
    if len(hashes) > 1:
        counts = ", ".join(f"`{h}` ({n} cells)" for h, n in hashes.items())
        lines += [
            "",
            f"**Warning: this study mixes cells made by different code** (code_hash {counts}); "
            "rerun the older cells with force=true before comparing them.",
        ]
    machines = complete["machine"].fillna("not recorded (made before runs recorded it)").value_counts()
    if len(machines) > 1:
        lines += [
            "",
            "**Note: these cells were made on different machines or builds**, so their numbers are not bitwise "
            "comparable: on another processor, instruction set, jaxlib or XLA flags, XLA's code differs at float "
            "rounding and training amplifies it (same machine type and versions: bitwise equal for any seeds, cells, "
            "launchers and device counts).",
            "",
            *[f"- {machine} ({n} cells)" for machine, n in machines.items()],
        ]
    for warning in grid_warnings(study):
        lines += ["", f"**Note: {warning}.**"]
    missing = study.cells[study.cells["status"] != CellStatus.COMPLETE]
    if len(missing):
        lines += ["", "Missing (not complete):", ""]
        lines += [
            f"- `{r.cell}`: {r.status}" + (f" ({r.reason})" if isinstance(r.reason, str) else "")
            for r in missing.itertuples()
        ]
    if first is not None:
        lines += [
            "",
            f"Config of the tables' first cell (`{first.name}`; the others differ in the keys the tables start with):",
            "",
            "```yaml",
            (first / CONFIG).read_text().rstrip(),
            "```",
        ]
    return "\n".join(lines)


def figure_section(
    study: Study,
    specs: list[FigureSpec],
    out: Path,
    formats: tuple[str, ...],
    dpi: int,
    predicted: Predictions | None = None,
    **encoding: Any,
) -> list[str]:
    """Draw each figure that applies into ``out/figures`` (numbered pages when it is too large for one)
    and return its markdown: the pages, the caption, the notes and the encoding; a figure that does
    not apply gets a one-line reason. ``predicted``: the study's theory predictions, computed once
    for every profile figure (None: each computes its own)."""
    lines = []
    for spec in specs:
        reason = spec.missing(study)
        if reason is not None:
            lines += ["", f"*{spec.name}*: not drawn: {reason}."]
            continue
        plot = spec.render(study, predicted, **encoding)
        paths = [p for p in plot.save(out / "figures", spec.name, formats, dpi) if p.suffix == f".{formats[0]}"]
        lines.append("")
        lines += [
            f"![{spec.name}{f' page {i}' if len(paths) > 1 else ''}]({path.relative_to(out)})"
            for i, path in enumerate(paths, start=1)
        ]
        lines += ["", " ".join([spec.caption, *plot.notes, f"Encoding: {plot.encoding.describe()}."])]
    return lines


CONVERGENCE_COLUMNS = [
    "cell",
    "outcome",
    "steps_to_target",
    "steps_low",
    "steps_high",
    "n_reached",
    "n_healthy",
    "train_loss_auc_mean",
    "train_loss_mean",
    "test_loss_mean",
    "test_accuracy_mean",
    "test_accuracy_low",
    "test_accuracy_high",
    "n_seeds",
    "n_diverged",
    "n_collapsed",
]
GRADIENT_COLUMNS = [
    "cell",
    "phase",
    "step",
    "n_ended_early",
    "delta_std_ratio_gmean",
    "delta_std_ratio_low",
    "delta_std_ratio_high",
    "delta_std_ratio_n_zero",
    "delta_std_ratio_predicted",
    "grad_norm_ratio_gmean",
    "grad_norm_ratio_low",
    "grad_norm_ratio_high",
    "grad_norm_ratio_n_zero",
]


def _convergence_section(
    convergence: pd.DataFrame, keys: list[str], target: float, metric: str, split: str
) -> list[str]:
    if convergence.empty:
        return ["\nNo complete cell yet: no tables or figures."]
    return [
        "",
        "## Convergence",
        "",
        f"Steps to {split} {metric} {target} (lower median over the healthy seeds and bootstrap 95% CI; ∞ = fewer than half of them reached it), "
        "area under the training loss, and final metrics (mean and 95% t interval over the healthy seeds, those that neither "
        "diverged nor collapsed; the interval is taken on the logit scale for accuracies and on the log scale for losses and "
        "areas, by the delta method, so that it stays inside [0, 1] or above 0). "
        f"{outcome_text()} A cell with no healthy seed has outcome `diverged` or `collapsed` (`collapsed` when at least one "
        "seed collapsed) and no final metrics.",
        "",
        markdown_table(convergence, [*keys, *CONVERGENCE_COLUMNS]),
    ]


def _gradient_section(gradients: pd.DataFrame, predicted: Predictions, keys: list[str]) -> list[str]:
    if gradients.empty:
        return []
    ratios = gradients.drop_duplicates(["study", "cell", "phase"]).merge(predicted.ratios(), on=KEY, how="left")
    ratios.loc[ratios["phase"] != "start", "delta_std_ratio_predicted"] = np.nan
    return [
        "",
        "## Gradients",
        "",
        "First-to-last hidden layer ratios of δ std and of the weight-gradient norm (geometric mean over seeds and the 95% t interval "
        "of the logs mapped back; below 1 the gradients shrink towards the input). `end` pools the seeds that trained to the last "
        "step (collapsed ones too); `early` is each diverged seed at its own last healthy step (`n_ended_early` counts them), kept "
        f"apart from `end`. A ratio with an exact 0 on top (or 0 over 0) shows as {ZERO_MAGNITUDE}; `_n_zero` counts such seeds. "
        "Per-layer values are in gradients.csv. "
        "`delta_std_ratio_predicted` is mean-field theory's ratio at step 0 (gradstudy.theory) for the cell's own "
        "initialization, activation, widths and data, and its batch or layer norm (under batch norm, the large-batch limit).",
        *[
            f"No prediction for {', '.join(cells)}: {reason}."
            for reason, cells in predicted.skipped.groupby("reason", sort=False)["cell"]
        ],
        "",
        markdown_table(ratios, [*keys, *GRADIENT_COLUMNS]),
    ]


def write_report(
    study_dirs: Path | Sequence[Path],
    out: Path | None = None,
    formats: tuple[str, ...] = ("png",),
    dpi: int = DPI,
    target: float = 0.9,
    metric: str = "accuracy",
    split: str = "test",
    **encoding: Any,
) -> Path:
    """Write figures/, the tables as CSV and report.md for one study folder or several; returns the report's path.

    ``out`` defaults to the study folder (required for several). ``encoding`` (``hue``, ``style``,
    ``col``, ``row``, ``wrap``) goes to every figure that compares cells; the per-cell figures take
    only ``col``, ``row`` and ``wrap``. The theory's predictions are computed once, from the stored
    values (``analysis.predictions``), for the gradient table and every profile figure.
    """
    dirs = [Path(study_dirs)] if isinstance(study_dirs, str | Path) else [Path(d) for d in study_dirs]
    if out is None and len(dirs) > 1:
        raise ValueError("several studies: say where the report goes with --out")
    study = load_study(dirs)
    if study.cells.empty:
        raise FileNotFoundError(
            f"{', '.join(map(str, dirs))} holds no gradstudy cells (no <cell>/meta.json); point at results/<study>"
        )
    out = Path(out) if out else dirs[0]
    convergence = analysis.convergence_table(study, target, metric, split)
    gradients = analysis.gradient_table(study)
    complete = study.complete()
    predicted = predicted_layers(complete)
    keys = study_keys(study)
    out.mkdir(parents=True, exist_ok=True)
    convergence.to_csv(out / "convergence.csv", index=False)
    gradients.to_csv(out / "gradients.csv", index=False)
    sections = [_header(" + ".join(d.name for d in dirs), study)]
    sections += _convergence_section(convergence, keys, target, metric, split)
    sections += _gradient_section(gradients, predicted, keys)
    if not complete.cells.empty:
        specs = [steps_figure(target, metric, split), *REPORT_FIGURES]
        sections += ["", "## Figures", *figure_section(complete, specs, out, formats, dpi, predicted, **encoding)]
    report = out / "report.md"
    report.write_text("\n".join(sections) + "\n")
    return report


def _keys(text: str | None) -> list[str] | None:
    """``a,b`` on the command line: several keys combined into one channel."""
    return None if text is None else [k for k in text.split(",") if k]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m gradstudy.report`` (the README's commands are checked against it)."""
    parser = argparse.ArgumentParser(
        prog="python -m gradstudy.report",
        description="Write the tables (convergence.csv, gradients.csv), the figures and report.md of one or more "
        "studies. Reads files only, so it works on a study that is still running.",
        epilog="Exit status: 0 when the report is written, 2 when a folder holds no cells or the arguments are wrong.",
    )
    parser.add_argument(
        "study", type=Path, nargs="+", help="A study folder such as results/default, or several to report together."
    )
    parser.add_argument(
        "--out", type=Path, help="Write into this folder instead of the study's own (needed for several studies)."
    )
    parser.add_argument(
        "--format",
        nargs="+",
        default=["png"],
        choices=["png", "pdf", "svg"],
        help="The figure file formats, one or more (default: png).",
    )
    parser.add_argument(
        "--dpi", type=int, default=DPI, help=f"The figure resolution (default {DPI}: pages of at most about 2,400 px)."
    )
    parser.add_argument(
        "--target", type=float, default=0.9, help="The value that steps-to-target waits for (default 0.9)."
    )
    parser.add_argument(
        "--metric",
        choices=["accuracy", "loss"],
        default="accuracy",
        help="The metric steps-to-target reads: accuracy reaches the target from below, loss from above.",
    )
    parser.add_argument(
        "--split", choices=["train", "test"], default="test", help="The split steps-to-target reads (default: test)."
    )
    for channel, what in (("hue", "colour"), ("style", "line style"), ("col", "panel columns"), ("row", "panel rows")):
        parser.add_argument(
            f"--{channel}",
            metavar="KEY[,KEY]",
            help=f"The config key(s) shown by {what}; by default they are chosen from the keys that vary.",
        )
    parser.add_argument(
        "--wrap", type=int, default=4, help="How many panels stand in a line before it wraps (default 4)."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    encoding = {c: _keys(getattr(args, c)) for c in ("hue", "style", "col", "row")}
    try:
        report = write_report(
            args.study,
            args.out,
            tuple(args.format),
            args.dpi,
            args.target,
            args.metric,
            args.split,
            wrap=args.wrap,
            **encoding,
        )
    except FileNotFoundError as err:
        print(f"gradstudy.report: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"gradstudy.report: {err}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
