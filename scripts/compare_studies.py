"""Compare two results folders cell by cell, bitwise: the same cell ids, and every table of every
cell equal value for value (``pandas.DataFrame.equals``, NaN equal to NaN). With ``--reports`` also
the CSV tables that ``gradstudy.report`` wrote for each study.

    python scripts/compare_studies.py BEFORE AFTER [--reports REPORT_BEFORE REPORT_AFTER]

Exits 0 when everything matches, 1 with the differences listed otherwise. Used to check that a
change of code (a refactor, an upgrade) leaves every number of a study as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gradstudy.schema import META, TABLE_COLUMNS


def cell_folders(root: Path) -> dict[str, Path]:
    """{study/cell: folder} of every cell under ``root`` (a study or a folder of studies)."""
    return {f"{p.parent.parent.name}/{p.parent.name}": p.parent for p in sorted(root.rglob(META))}


def compare_cells(before: Path, after: Path) -> list[str]:
    old, new = cell_folders(before), cell_folders(after)
    problems = [f"cell only in {before}: {c}" for c in sorted(set(old) - set(new))]
    problems += [f"cell only in {after}: {c}" for c in sorted(set(new) - set(old))]
    for cell in sorted(set(old) & set(new)):
        for table in TABLE_COLUMNS:
            a, b = old[cell] / table, new[cell] / table
            if a.is_file() != b.is_file():
                problems.append(f"{cell}/{table}: present in only one")
            elif a.is_file() and not pd.read_parquet(a).equals(pd.read_parquet(b)):
                problems.append(f"{cell}/{table}: differs")
    return problems


def compare_reports(before: Path, after: Path) -> list[str]:
    problems = []
    for a in sorted(before.glob("*.csv")):
        b = after / a.name
        if not b.is_file():
            problems.append(f"{a.name}: missing in {after}")
        elif not pd.read_csv(a).equals(pd.read_csv(b)):
            problems.append(f"{a.name}: differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare two results folders cell by cell, bitwise: the same cell ids, and every table of every "
        "cell equal value for value.",
        epilog="Exit status: 0 when everything matches, 1 with the differences listed otherwise.",
    )
    parser.add_argument("before", type=Path, help="The results folder made by the old code.")
    parser.add_argument("after", type=Path, help="The results folder made by the new code, with the same commands.")
    parser.add_argument(
        "--reports",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        default=None,
        help="Also compare the CSV tables that gradstudy.report wrote into these two folders.",
    )
    args = parser.parse_args(argv)
    problems = compare_cells(args.before, args.after)
    n_cells = len(cell_folders(args.before))
    if args.reports:
        problems += compare_reports(*args.reports)
    for line in problems:
        print(line)
    print(f"{n_cells} cells compared: {'all tables bitwise equal' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
