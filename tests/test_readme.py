"""The README's commands stay true: CI runs the README's test command, and its grid composes."""

import re
from pathlib import Path

from conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]


def _quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash)?\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    run, test = _quickstart()
    assert "python -m gradstudy.run -m init=xavier,he act=relu,elu" in run
    assert test in (ROOT / ".ci" / "run").read_text()


def test_quickstart_grid_composes_and_validates():
    from gradstudy.cells.validate import validate

    overrides = _quickstart()[0].split("gradstudy.run -m ")[1].split()
    for init in overrides[0].split("=")[1].split(","):
        for act in overrides[1].split("=")[1].split(","):
            validate(compose_config(f"init={init}", f"act={act}"))
