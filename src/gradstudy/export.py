"""``python -m gradstudy.export tensorboard STUDY [STUDY ...] --out DIR``: a study's tables as TensorBoard
event files, to look at runs beside a notebook.

One TensorBoard run per cell and seed, named by the keys that tell the study's cells apart and the
seed (``init=he,act=relu/seed_3``; the cell id when nothing varies): the train and test loss and
accuracy (``train/loss``…), the minibatch loss and learning rate of every step (``minibatch/loss``,
``minibatch/lr``), every per-layer
statistic (``layer_03/grad_norm``), single units' percentiles where recorded
(``layer_03/unit_2/z_p50``), the fixed-bin histograms as TensorBoard histograms
(``layer_03/delta``, the bins alone: zero, below, above and non-finite counts stay in the Parquet),
the resolved config as text and the varying keys as hparams with the seed's final metrics. A seed
that diverged ends at its last healthy step, as its tables do. Files only: the tables are read with
``load_study``, nothing is trained. Needs ``tensorboardX`` (``pip install -e ".[tensorboard]"``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradstudy.schema import CONFIG, CellStatus
from gradstudy.show.encoding import study_keys
from gradstudy.show.present import value_text
from gradstudy.store.study import Study, load_study, rows_of

#: The hparams' metrics: each seed's value at its last evaluation.
FINAL_METRICS = (("test", "accuracy"), ("test", "loss"), ("train", "loss"))


def run_name(cell: pd.Series, keys: list[str], seed: int) -> str:
    """``init=he,act=relu/seed_3``: the cell's label keys and the seed, safe as a folder path."""
    label = ",".join(f"{k}={value_text(cell[k])}" for k in keys) if keys else str(cell["cell"])
    return f"{re.sub(r'[^A-Za-z0-9_.,=+-]', '_', label)}/seed_{seed}"


def _hparam(value: Any) -> bool | str | float | int:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def _histograms(writer: Any, hists: pd.DataFrame) -> None:
    """Each (step, layer, quantity) histogram's fixed bins as a TensorBoard histogram; sum and sum of
    squares from the bin centres (TensorBoard's summary line only)."""
    bins = hists[hists["region"] == "bin"]
    for (step, layer, quantity), h in bins.groupby(["step", "layer", "quantity"]):
        h = h.sort_values("bin_left")
        counts = h["count"].to_numpy(np.float64)
        if counts.sum() == 0:
            continue
        centres = ((h["bin_left"] + h["bin_right"]) / 2).to_numpy(np.float64)
        filled = np.flatnonzero(counts)
        writer.add_histogram_raw(
            f"layer_{int(layer):02d}/{quantity}",
            min=float(h["bin_left"].iloc[filled[0]]),
            max=float(h["bin_right"].iloc[filled[-1]]),
            num=int(counts.sum()),
            sum=float(centres @ counts),
            sum_squares=float((centres**2) @ counts),
            bucket_limits=h["bin_right"].to_numpy(np.float64).tolist(),
            bucket_counts=counts.tolist(),
            global_step=int(step),
        )


def _seed_rows(study: Study, key: tuple[str, str], seed: int) -> dict[str, pd.DataFrame]:
    return {
        name: (lambda frame: frame[frame["seed"] == seed])(rows_of(getattr(study, name), key))
        for name in ("curves", "steps", "layers", "hists", "units")
    }


def write_run(writer: Any, study: Study, cell: pd.Series, seed: int, keys: list[str]) -> None:
    """One seed of one cell into ``writer``: its scalars, histograms, config and hparams."""
    rows = _seed_rows(study, (cell["study"], cell["cell"]), seed)
    for r in rows["curves"].itertuples():
        writer.add_scalar(f"{r.split}/{r.metric}", float(r.value), int(r.step))
    for r in rows["steps"].itertuples():
        writer.add_scalar("minibatch/loss", float(r.loss), int(r.step))
        writer.add_scalar("minibatch/lr", float(r.lr), int(r.step))
    for r in rows["layers"].itertuples():
        writer.add_scalar(f"layer_{int(r.layer):02d}/{r.stat}", float(r.value), int(r.step))
    for r in rows["units"].itertuples():
        writer.add_scalar(f"layer_{int(r.layer):02d}/unit_{int(r.unit)}/{r.stat}", float(r.value), int(r.step))
    _histograms(writer, rows["hists"])
    config = (Path(cell["path"]) / CONFIG).read_text()
    writer.add_text("config", f"```yaml\n{config}```", 0)
    last = rows["curves"].sort_values("step").groupby(["split", "metric"])["value"].last()
    metrics = {f"final/{split}_{metric}": float(last[(split, metric)]) for split, metric in FINAL_METRICS}
    hparams = {k: _hparam(cell[k]) for k in keys if k != "study"} | {"seed": seed, "cell": str(cell["cell"])}
    writer.add_hparams(hparams, metrics, name="hparams")


def export_tensorboard(study: Study, out: Path) -> tuple[list[str], list[str]]:
    """Write every complete cell's seeds under ``out``; returns the runs written and, for every cell
    left out (corrupt, failed, still running), a line saying which and why."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ImportError('the TensorBoard export needs tensorboardX: pip install -e ".[tensorboard]"') from err
    keys = study_keys(study)
    cells = study.sorted_cells()
    written, skipped = [], []
    for _, cell in cells.iterrows():
        if cell["status"] != CellStatus.COMPLETE:
            reason = f" ({cell['reason']})" if isinstance(cell["reason"], str) else ""
            skipped.append(f"{cell['study']}/{cell['cell']}: {cell['status']}{reason}")
            continue
        seeds = rows_of(study.seeds, (cell["study"], cell["cell"]))["seed"]
        for seed in sorted(int(s) for s in seeds):
            name = run_name(cell, keys, seed)
            writer = SummaryWriter(logdir=str(out / name))
            try:
                write_run(writer, study, cell, seed, keys)
            finally:
                writer.close()
            written.append(name)
    return written, skipped


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m gradstudy.export``."""
    parser = argparse.ArgumentParser(
        prog="python -m gradstudy.export",
        description="Export one or more studies' tables for other tools. tensorboard: one TensorBoard run per "
        "cell and seed (losses, accuracies, every per-layer statistic, the histograms, the config and hparams).",
        epilog="Exit status: 0 when every cell was exported, 1 when some were left out (each is named), 2 when a "
        "folder holds no cells or tensorboardX is missing.",
    )
    parser.add_argument("format", choices=["tensorboard"], help="What to write: tensorboard event files.")
    parser.add_argument(
        "study", type=Path, nargs="+", help="A study folder such as results/default, or several to export together."
    )
    parser.add_argument("--out", type=Path, required=True, help="The folder to write the runs into.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        study = load_study(args.study)
        if study.cells.empty:
            raise FileNotFoundError(
                f"{', '.join(map(str, args.study))} holds no gradstudy cells (no <cell>/meta.json); point at results/<study>"
            )
        written, skipped = export_tensorboard(study, args.out)
    except (FileNotFoundError, ImportError) as err:
        print(f"gradstudy.export: {err}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"gradstudy.export: left out {line}", file=sys.stderr)
    print(f"wrote {len(written)} run(s) to {args.out}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
