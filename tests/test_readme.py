"""The README's and docs' commands stay true: CI runs the README's test command, every fenced command
parses against the tool it names (and the cheap ones run), and the README's tour runs as pasted."""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser

from gradstudy import export, report, reproduce, status

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The tools a fenced command may name, with the check that its arguments parse.
PARSERS = {
    "gradstudy.report": report,
    "gradstudy.status": status,
    "gradstudy.reproduce": reproduce,
    "gradstudy.export": export,
}
PYTHONS = ("python", "python3", ".venv/bin/python")


def _blocks(path: Path, language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def _commands(block: str) -> list[list[str]]:
    """Each command of a fenced block, as tokens: comments dropped, ``&&`` chains split, and leading
    environment assignments (``JAX_PLATFORMS=cpu``) left out."""
    out = []
    for line in block.splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            command = tokens[: tokens.index("&&")] if "&&" in tokens else tokens
            tokens = tokens[len(command) + 1 :]
            while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):
                command = command[1:]
            if command:
                out.append(command)
    return out


FENCED = [(path.relative_to(ROOT).as_posix(), c) for path in PAGES for b in _blocks(path) for c in _commands(b)]


def _quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash)?\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    run, test = _quickstart()
    assert "python -m gradstudy.run -m init=xavier,he act=relu,elu" in run
    assert test in (ROOT / ".ci" / "run").read_text()


def test_every_page_is_reachable_from_the_readme_in_one_click():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name
    assert len(readme.splitlines()) < 200


def test_every_link_between_pages_names_a_page_and_heading_that_exist():
    def anchors(path: Path) -> set[str]:
        headings = re.findall(r"^#+ (.*)$", path.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}

    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", page.read_text()):
            if target.startswith("http"):
                continue
            linked = (page.parent / target).resolve() if target else page
            assert linked.exists(), (page.name, target)
            if anchor:
                assert anchor in anchors(linked), (page.name, target, anchor)


def _run_overrides(args: list[str]) -> list[str]:
    """The first cell of a ``gradstudy.run`` command line: its overrides with each sweep at its first
    value (zipped keys too), the ``-m`` flag left out."""
    overrides = OverridesParser.create().parse_overrides([a for a in args if a != "-m"])
    first = []
    for override in overrides:
        value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
        first.append(
            f"{override.get_key_element()}={value}"
            if value is not None
            else f"{override.get_key_element()}={override.get_value_element_as_str()}"
        )
    return first


def _check(tokens: list[str]) -> None:
    """Whether a fenced command names a real tool and its arguments parse."""
    program, args = tokens[0], tokens[1:]
    if program == "gradstudy":  # the console script: gradstudy run|report|reproduce|status ...
        program, args = "python", ["-m", f"gradstudy.{args[0]}", *args[1:]]
    if program == "source":
        assert args == [".venv/bin/activate"]
    elif program == "bash":
        assert args[0].startswith("scripts/") and (ROOT / args[0]).is_file(), args[0]
        assert args[1:] in ([], ["--dry-run"]), args
    elif program.endswith("pip"):
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for arg in args:
            for extra in re.findall(r"\[(\w+)\]", arg):
                assert extra in extras, arg
    elif program in PYTHONS and args[:2] == ["-m", "venv"]:
        pass
    elif program in PYTHONS and args[0] == "-m" and args[1] == "pytest":
        marker = args[args.index("-m", 1) + 1] if "-m" in args[1:] else ""
        assert marker in ("", "not slow"), marker
    elif program in PYTHONS and args[0] == "-m" and args[1] == "gradstudy.run":
        compose_config(*_run_overrides(args[2:]), hydra=True)
    elif program in PYTHONS and args[0] == "-m":
        PARSERS[args[1]].build_parser().parse_args(args[2:])
    elif program in PYTHONS and args[0].startswith("scripts/"):
        assert (ROOT / args[0]).is_file(), args[0]
        helped = subprocess.run([sys.executable, args[0], "--help"], cwd=ROOT, capture_output=True, text=True)
        assert helped.returncode == 0, helped.stderr[-1000:]
        for option in (a for a in args[1:] if a.startswith("--")):
            assert option in helped.stdout, option
        if args[0] == "scripts/time_grid.py":
            compose_config(*_run_overrides([a for a in args[1:] if "=" in a and not a.startswith("--")]))
    else:
        raise AssertionError(f"a fenced command names a tool this test does not know: {' '.join(tokens)}")


@pytest.mark.parametrize("page, tokens", FENCED, ids=[f"{p}:{' '.join(t)[:60]}" for p, t in FENCED])
def test_every_fenced_command_parses(page, tokens):
    _check(tokens)


def test_quickstart_grid_composes_and_validates():
    from gradstudy.cells.validate import validate

    overrides = _quickstart()[0].split("gradstudy.run -m ")[1].split()
    for init in overrides[0].split("=")[1].split(","):
        for act in overrides[1].split("=")[1].split(","):
            validate(compose_config(f"init={init}", f"act={act}"))


def _python(tokens: list[str]) -> list[str]:
    """A pasted command as the activated environment runs it: ``python`` is this interpreter."""
    return [sys.executable, *tokens[1:]] if tokens[0] in PYTHONS else tokens


@pytest.mark.slow
def test_the_readme_tour_runs_as_pasted(tmp_path, monkeypatch):
    """The quickstart's grid, then the tour's commands and its Python, in order, in a fresh folder
    (the install is CI's own; ``python`` is the environment's, as after ``source .venv/bin/activate``)."""
    readme = ROOT / "README.md"
    quickstart_run = _commands(_quickstart()[0])[-1]
    tour = readme.read_text().split("## A tour of one grid")[1].split("\n## ")[0]
    commands = [quickstart_run, *(c for b in re.findall(r"```bash\n(.*?)```", tour, re.S) for c in _commands(b))]
    assert len(commands) >= 5
    for tokens in commands:
        done = subprocess.run(_python(tokens), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (tokens, done.stderr[-2000:])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for snippet in re.findall(r"```python\n(.*?)```", tour, re.S):
        exec(snippet, namespace)
    cells = namespace["study"].cells.set_index(["init", "optim.lr"])
    assert set(cells["outcome"]) <= {"ok", "diverged", "collapsed"} and len(cells) == 8
    assert cells.loc[("he", 3.0), "outcome"] == "diverged"  # at step 3 on every machine seen so far
