"""JAX's persistent compilation cache, in the user cache folder: a rerun of a cell does not compile again."""

from __future__ import annotations

from pathlib import Path

from gradstudy.inputs.cache import cache_root


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
