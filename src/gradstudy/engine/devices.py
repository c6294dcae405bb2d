"""Expose every CPU core to JAX as its own host device, so that a cell's seeds can be split across them.

XLA runs one program on a CPU mostly on one core: a seed's minibatch matmuls are too small to
parallelize. Sharding the seed axis across one host device per core runs the seeds side by side.
Must be called before JAX initializes its backend (the first computation or device query).
"""

from __future__ import annotations

import os
from typing import Any

_FLAG = "--xla_force_host_platform_device_count"


def use_host_devices(count: int | None = None) -> None:
    """Ask XLA for ``count`` host devices (default: one per CPU core), unless XLA_FLAGS already sets it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count or os.cpu_count() or 1}".strip()


def device_info() -> dict[str, Any]:
    """The device a cell ran on, for its ``meta.json``: platform, kind, how many there are, and the
    backend's build (``platform_version``: the CUDA and driver versions on a GPU)."""
    import jax
    from jax.extend import backend

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "kind": device.device_kind,
        "count": jax.device_count(),
        "platform_version": backend.get_backend().platform_version,
    }
