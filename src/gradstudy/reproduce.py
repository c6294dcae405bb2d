"""``python -m gradstudy.reproduce NAME [NAME ...] | --all [--budget cpu|paper|smoke]``: re-run a paper, check its claims.

For each paper: write the plan of cells, check that local data files exist, run (or resume)
``python -m gradstudy.run -m +experiment=NAME budget=B`` in a subprocess, then read the results
files only, check every claim and write ``results/<study>/reproduction.md`` with its figures.

Exit status: 0 when no claim is contradicted, 1 when one is, 2 on bad arguments or missing data
files, 3 when the sweep left cells unfinished.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from gradstudy.cells.config import BUDGETS, canonical, register_configs, resolved
from gradstudy.cells.expand import expand
from gradstudy.inputs.datafiles import MissingDataError
from gradstudy.papers import papers
from gradstudy.papers.claims import CONTRADICTED, Direction, Paper, Verdict, check
from gradstudy.report import figure_section
from gradstudy.schema import ARM, conf_dir
from gradstudy.show.encoding import DPI
from gradstudy.show.present import markdown_table, number
from gradstudy.store.files import write_json, write_text
from gradstudy.store.ids import cell_id
from gradstudy.store.study import load_study

PLAN = "plan.json"
REPORT = "reproduction.md"


@dataclass(frozen=True)
class PlannedCell:
    overrides: tuple[str, ...]
    cell: str
    data: DictConfig
    #: the cell's whole composed config, as ``gradstudy.run -m`` composes it
    cfg: DictConfig


@dataclass(frozen=True)
class Plan:
    name: str
    budget: str
    study_dir: Path
    cells: tuple[PlannedCell, ...]


def _compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_config)


def grid(cfg: DictConfig) -> list[tuple[str, ...]]:
    """Every cell of the preset's ``hydra.sweeper.params`` (crossed, with ``hydra.sweeper.zip``'s keys
    paired), as override lists: what the sweeper runs."""
    params = cfg.hydra.sweeper.params or {}
    zipped = list(cfg.hydra.sweeper.get("zip") or [])
    return [tuple(c) for c in expand([f"{key}={value}" for key, value in params.items()], zipped)]


def plan(name: str, budget: str, results_dir: str) -> Plan:
    """Compose every cell of the preset ``name`` at ``budget``, as ``gradstudy.run -m`` would."""
    base = [f"+experiment={name}", f"budget={budget}", f"results_dir={results_dir}"]
    top = _compose(base, hydra_config=True)
    cells = []
    for combination in grid(top):
        cfg = _compose([*base, *combination])
        cells.append(PlannedCell(tuple(combination), cell_id(canonical(resolved(cfg))), cfg.data, cfg))
    study_dir = Path(results_dir) / str(top.study)
    return Plan(name, budget, study_dir, tuple(cells))


def write_plan(p: Plan) -> Path:
    path = p.study_dir / PLAN
    write_json(
        path,
        {
            "paper": p.name,
            "budget": p.budget,
            "command": " ".join(["python", *run_command(p)[1:]]),
            "cells": [{"cell": c.cell, "overrides": list(c.overrides)} for c in p.cells],
        },
    )
    return path


def check_data(p: Plan) -> None:
    """Raise MissingDataError before anything runs when a cell's local data files are absent."""
    from gradstudy.inputs.data import FILE_DATASETS, load_dataset

    for data in {OmegaConf.to_yaml(c.data, resolve=True) for c in p.cells}:
        node = OmegaConf.create(data)
        if node.name in FILE_DATASETS:
            load_dataset(node)


def run_command(p: Plan) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gradstudy.run",
        "-m",
        f"+experiment={p.name}",
        f"budget={p.budget}",
        f"results_dir={p.study_dir.parent}",
    ]


def arm_of(cell: PlannedCell) -> str | None:
    """The ``+arm=`` value of a planned cell, if its grid has arms."""
    return next((o.split("=", 1)[1] for o in cell.overrides if o.startswith(f"+{ARM}=")), None)


def write_latency(paper: Paper, p: Plan) -> Path:
    """Time the inference of the paper's ``latency_arms`` (``gradstudy.engine.latency``) and write the table
    beside the cells, where the speed claims read it."""
    from gradstudy.analysis.latency import LATENCY_FILE
    from gradstudy.engine.latency import BATCH, measure_latency
    from gradstudy.inputs.data import load_dataset

    configs = {arm_of(c): c.cfg for c in p.cells if arm_of(c) in paper.latency_arms}
    dataset = load_dataset(next(iter(configs.values())).data)
    table = measure_latency(configs, np.asarray(dataset.x_train[:BATCH]), dataset.n_classes)
    path = p.study_dir / LATENCY_FILE
    write_text(path, table.to_csv(index=False))
    return path


def _verdict_rows(verdicts: list[Verdict]) -> pd.DataFrame:
    rows = []
    for v in verdicts:
        sign = "<" if v.claim.direction is Direction.BELOW else ">"
        ours = v.note if v.measurement is None else str(v.measurement.interval)
        rows.append(
            {
                "claim": v.claim.text,
                "measured": v.claim.measured,
                "threshold": f"{sign} {number(v.claim.threshold)}",
                "ours: mean [95% CI]": ours,
                "verdict": f"**{v.verdict}**",
            }
        )
    return pd.DataFrame(rows, columns=["claim", "measured", "threshold", "ours: mean [95% CI]", "verdict"])


def write_reproduction(paper: Paper, p: Plan, wall_s: float | None = None) -> tuple[Path, list[Verdict]]:
    """Check every claim on the planned cells' files and write ``reproduction.md`` beside them."""
    study = load_study(p.study_dir, cells=[c.cell for c in p.cells])
    done = study.complete()
    verdicts = [check(claim, done) for claim in paper.claims]
    missing = [c.cell for c in p.cells if c.cell not in set(done.cells["cell"])]
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("supported", "contradicted", "inconclusive")}
    lines = [
        f"# Reproduction: {paper.citation}",
        "",
        f"Budget **{p.budget}**: {paper.differences.get(p.budget, '')}",
        f"The paper: {paper.setup}",
        f"Datasets used: {', '.join(sorted({str(c.data.name) for c in p.cells}))}. "
        f"{len(p.cells) - len(missing)} of {len(p.cells)} planned cells complete"
        + (f"; the sweep took {wall_s:.0f} s." if wall_s is not None else "."),
        "",
        f"Verdicts: {counts['supported']} supported, {counts['contradicted']} contradicted, {counts['inconclusive']} inconclusive. "
        "A claim is supported when the 95% CI over seeds lies wholly on its side of the threshold, contradicted when wholly on "
        "the other side, inconclusive when it straddles the threshold or its cells are missing.",
        "",
        "## Claims",
        "",
        markdown_table(_verdict_rows(verdicts)),
        "### Sources and numbers",
        "",
    ]
    for v in verdicts:
        numbers = (
            ""
            if v.measurement is None
            else "; ".join(f"{k} = {number(float(x))}" for k, x in v.measurement.numbers.items())
        )
        lines.append(
            f"- **{v.claim.key}** ({v.verdict}): {v.claim.source}" + (f" Numbers: {numbers}." if numbers else "")
        )
    if missing:
        lines += ["", "Missing cells (not complete): " + ", ".join(f"`{c}`" for c in missing)]
    if paper.paper_table is not None and paper.ours_table is not None and not done.cells.empty:
        lines += [
            "",
            "## Paper and ours",
            "",
            f"Paper ({paper.paper_table_source}):",
            "",
            markdown_table(paper.paper_table, index=True),
            "Ours:",
            "",
            markdown_table(paper.ours_table(done), index=True),
        ]
    if not done.cells.empty:
        lines += ["## Figures", *figure_section(done, list(paper.figures), p.study_dir, ("png",), DPI)]
    report = p.study_dir / REPORT
    write_text(report, "\n".join(lines) + "\n")
    return report, verdicts


def reproduce(name: str, budget: str, results_dir: str, run: bool = True) -> int:
    """Plan, run and check one paper; returns the exit status for it."""
    paper = papers()[name]
    p = plan(name, budget, results_dir)
    print(f"gradstudy.reproduce: {name} ({budget}): {len(p.cells)} cells, plan in {write_plan(p)}", flush=True)
    try:
        check_data(p)
    except MissingDataError as err:
        print(f"gradstudy.reproduce: {err}", file=sys.stderr)
        return 2
    wall_s, status = None, 0
    if run:
        started = time.time()
        result = subprocess.run(run_command(p))
        wall_s = time.time() - started
        if result.returncode != 0:
            print(
                f"gradstudy.reproduce: the sweep exited with status {result.returncode}; unfinished cells make their claims inconclusive",
                file=sys.stderr,
            )
            status = 3
    if run and paper.latency_arms:
        print(f"gradstudy.reproduce: timing inference of {', '.join(paper.latency_arms)}: {write_latency(paper, p)}")
    report, verdicts = write_reproduction(paper, p, wall_s)
    for v in verdicts:
        print(f"  {v.verdict:>12}  {v.claim.key}")
    print(f"gradstudy.reproduce: wrote {report}" + (f" (sweep {wall_s:.0f} s)" if wall_s is not None else ""))
    if any(v.verdict == CONTRADICTED for v in verdicts):
        return 1
    return status


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m gradstudy.reproduce`` (the README's commands are checked against it)."""
    names = sorted(papers())
    parser = argparse.ArgumentParser(
        prog="python -m gradstudy.reproduce",
        description="Run a paper's preset (or resume it), check its claims on the results, and write "
        "results/<study>/reproduction.md with the verdicts, the paper's numbers beside ours and the figures.",
        epilog="Exit status: 0 when no claim is contradicted, 1 when one is, 2 on bad arguments or missing data "
        "files, 3 when the sweep left cells unfinished.",
    )
    parser.add_argument(
        "papers", nargs="*", metavar="NAME", help=f"The papers to reproduce: one or more of {', '.join(names)}."
    )
    parser.add_argument("--all", action="store_true", help="Reproduce every paper, one after the other.")
    parser.add_argument(
        "--budget",
        choices=BUDGETS,
        default="cpu",
        help="The size to run: cpu (minutes on 2 cores, offline data; the default), paper (the paper's own "
        "architecture, data and steps, for a GPU or a long run) or smoke (3 steps, a plumbing check).",
    )
    parser.add_argument(
        "--results-dir", default="results", help="The folder that holds the studies (default: results)."
    )
    parser.add_argument(
        "--no-run", action="store_true", help="Train nothing: check the claims on the results already on disk."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = sorted(papers())
    import matplotlib

    matplotlib.use("Agg")
    chosen = names if args.all else args.papers
    unknown = [n for n in chosen if n not in names]
    if not chosen or unknown:
        parser.print_usage(sys.stderr)
        print(
            f"gradstudy.reproduce: {'unknown paper ' + ', '.join(unknown) if unknown else 'name a paper or pass --all'}; "
            f"papers: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    statuses = [reproduce(name, args.budget, args.results_dir, run=not args.no_run) for name in chosen]
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
