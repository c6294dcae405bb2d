"""The user cache: JAX's persistent compilation cache (a rerun of a cell does not compile again) and prepared datasets."""

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


def cache_dir() -> Path:
    """Where JAX's persistent compilation cache lives."""
    return cache_root() / "jax"


def enable_compile_cache() -> Path:
    """Turn on the persistent cache for every program, however quick it was to compile."""
    import jax

    path = cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
