"""The user cache folder: prepared datasets in ``datasets/``, compiled programs in ``jax/`` (``engine.compile_cache``)."""

from __future__ import annotations

import os
from pathlib import Path

#: Overrides the cache folder (tests point it at a temporary one).
CACHE_ENV = "GRADSTUDY_CACHE_DIR"


def cache_root() -> Path:
    """``$GRADSTUDY_CACHE_DIR``, else ``<user cache dir>/gradstudy``: compiled programs in ``jax/``,
    prepared datasets in ``datasets/``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradstudy"
