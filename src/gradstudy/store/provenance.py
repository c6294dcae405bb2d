"""Provenance: package versions, the git hash and ``code_hash`` of the code that made a cell."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from gradstudy.schema import conf_dir

#: The package's own folder (its sources are what ``code_hash`` hashes).
PACKAGE = Path(__file__).resolve().parents[1]


#: Instruction-set extensions that change the code XLA generates for a CPU: it compiles for the host's own.
ISA_FEATURES = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
#: XLA flags that change no number: the host device count (results are bitwise the same for any count).
NEUTRAL_XLA_FLAGS = ("--xla_force_host_platform_device_count",)


def machine_info() -> dict[str, Any]:
    """The processor the cell ran on, the instruction-set features XLA compiled for (the host's own,
    from ``/proc/cpuinfo`` where there is one) and the XLA flags in force, for ``meta.json``."""
    import os
    import platform

    processor, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                processor = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {
        "processor": processor,
        "architecture": platform.machine(),
        "isa": [f for f in ISA_FEATURES if f in flags],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def machine_fingerprint(meta: dict[str, Any]) -> str | None:
    """What must be equal for two cells' numbers to be bitwise comparable, beyond their config and
    code: processor, instruction-set features, XLA flags that change numbers, jaxlib and the device
    kind. None for a cell made before runs recorded their machine."""
    machine = meta.get("machine")
    if not isinstance(machine, dict):
        return None
    flags = " ".join(f for f in str(machine.get("xla_flags", "")).split() if not f.startswith(NEUTRAL_XLA_FLAGS))
    device = meta.get("device", {}) or {}
    parts = [
        str(machine.get("processor")),
        "+".join(machine.get("isa", [])) or "no ISA features recorded",
        f"jaxlib {meta.get('versions', {}).get('jaxlib')}",
        f"{device.get('platform')}:{device.get('kind')}",
        *([f"XLA_FLAGS {flags}"] if flags else []),
    ]
    return "; ".join(parts)


def provenance() -> dict[str, Any]:
    """Package versions, the git hash and ``code_hash`` of the code, and the machine
    (``machine_info``), for ``meta.json`` (the device is the engine's to say: ``engine.devices.device_info``)."""
    import subprocess
    from importlib import metadata

    versions = {}
    for pkg in ("gradstudy", "jax", "jaxlib", "flax", "optax", "hydra-core", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, timeout=5)
        git_hash = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        git_hash = None
    return {"versions": versions, "git_hash": git_hash, "code_hash": code_hash(), "machine": machine_info()}


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """First 12 hex digits of the SHA-256 of the package's Python sources and the ``conf/`` YAML files
    (relative paths and contents, in sorted order): the code that made a cell, with or without git."""
    digest = hashlib.sha256()
    for root, pattern in ((PACKAGE, "*.py"), (Path(conf_dir()), "*.yaml")):
        for path in sorted(root.rglob(pattern)):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
