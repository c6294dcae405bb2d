"""Test setup: CPU only, a throwaway compilation cache, and a tiny composed config."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")  # the command-line tools choose Agg; the library leaves the backend alone

from gradstudy.engine.devices import use_host_devices

use_host_devices(2)  # the seed axis is sharded across two host devices, as on a 2-core machine

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gradstudy.cells.config import register_configs
from gradstudy.schema import conf_dir

#: A config small enough to train in well under a second: digits, 3 x 16, 30 steps.
TINY = [
    "data=digits",
    "model.depth=3",
    "model.width=16",
    "train.steps=30",
    "train.batch_size=32",
    "train.eval_every=10",
    "stats.every=5",
    "optim.lr=0.1",
]


def compose_config(*overrides: str, hydra: bool = False):
    """The config ``gradstudy.run`` would get; ``hydra=True`` keeps the ``hydra`` node (what callbacks see)."""
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture
def tiny_cfg():
    return lambda *overrides: compose_config(*TINY, *overrides)


@pytest.fixture(autouse=True, scope="session")
def _compile_cache(tmp_path_factory):
    """A throwaway persistent compilation cache, on as in ``gradstudy.run``: cells that share a program compile once."""
    from gradstudy.engine.compile_cache import enable_compile_cache

    os.environ["GRADSTUDY_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    enable_compile_cache()


#: Several seconds of training (width 256, batch 256), so that a signal sent a second in lands mid-cell
#: even on a fast machine with the program already compiled.
SLOW_CELL = (
    *(o for o in TINY if not o.startswith(("model.width", "train.batch_size"))),
    "model.width=256",
    "train.batch_size=256",
    "train.seeds=2",
    "train.steps=3000",
    "train.eval_every=1000",
    "stats.every=1000",
)


#: A linear net with a wide init: lr 0.005 trains every seed, lr 0.07 loses one seed, lr 50 all.
LR_SWEEP = (
    "init=normal",
    "init.sigma=0.5",
    "act=linear",
    "train.steps=40",
    "train.eval_every=20",
    "train.seeds=4",
    "stats=full",
)
LRS = (0.005, 0.07, 50.0)


@pytest.fixture(scope="session")
def lr_study(tmp_path_factory):
    """An LR sweep in which some seeds diverge and one cell diverges completely."""
    from gradstudy.run import run_cells

    root = tmp_path_factory.mktemp("lr")
    run_cells(
        [(compose_config(*TINY, *LR_SWEEP, f"optim.lr={lr}", f"results_dir={root}", "study=lr"), None) for lr in LRS]
    )
    return root / "lr"


def run_cli(args: list[str], cwd: Path, timeout: float = 300):
    """Run ``python -m gradstudy.run`` as the user would, in ``cwd``."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "gradstudy.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
