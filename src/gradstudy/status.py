"""``python -m gradstudy.status results/<study> [...]``: the state of every cell of one or more studies.

States (``gradstudy.store.study``): ``complete`` (its tables match the sizes, row counts and SHA-256 that
``meta.json`` lists), ``running`` (started, not finished: still running or killed), ``failed`` (the
message says why), ``corrupt`` (a file does not prove itself; a rerun redoes it). Exit status: 0 when
every cell is complete, 1 when some are not, 2 when a folder holds no cells. Reads files only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradstudy.schema import CellStatus
from gradstudy.store.study import load_study


def status_lines(paths: list[Path]) -> tuple[list[str], bool]:
    """The lines to print and whether every cell is complete."""
    cells = load_study(paths).cells
    if cells.empty:
        raise FileNotFoundError(f"{', '.join(map(str, paths))} holds no gradstudy cells")
    counts = cells["status"].value_counts()
    lines = [f"{len(cells)} cell(s): " + ", ".join(f"{n} {state}" for state, n in counts.items())]
    for row in cells[cells["status"] != CellStatus.COMPLETE].sort_values(["status", "study", "cell"]).itertuples():
        reason = f": {row.reason}" if isinstance(row.reason, str) else ""
        lines.append(f"  {row.status:<9} {row.study}/{row.cell}{reason}")
    return lines, bool((cells["status"] == CellStatus.COMPLETE).all())


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m gradstudy.status`` (the README's commands are checked against it)."""
    parser = argparse.ArgumentParser(
        prog="python -m gradstudy.status",
        description="Print how many cells of one or more studies are complete, running, interrupted, failed or "
        "corrupt, and why each one that is not complete is not. Reads files only.",
        epilog="Exit status: 0 when every cell is complete, 1 when some are not, 2 when a folder holds no cells.",
    )
    parser.add_argument(
        "study",
        type=Path,
        nargs="+",
        help="A study folder (results/<study>), a folder of studies, or several of either.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        lines, complete = status_lines(args.study)
    except FileNotFoundError as err:
        print(f"gradstudy.status: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
