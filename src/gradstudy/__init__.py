"""gradstudy: measure why deep networks are hard to train, layer by layer, over seeds and grids.

``load_study`` reads results; ``sweep``, ``run_cell`` and ``write_report`` (``gradstudy.api``) run and
report studies from Python. The latter are loaded on first use, so reading results imports no Hydra
composition or training code.
"""

from typing import Any

from gradstudy.schema import ConfigError
from gradstudy.store.study import Study, load_study

__all__ = ["ConfigError", "Study", "load_study", "run_cell", "sweep", "write_report"]


def __getattr__(name: str) -> Any:
    if name in ("sweep", "run_cell", "write_report"):
        from gradstudy import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradstudy' has no attribute {name!r}")
