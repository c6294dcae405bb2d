"""Provenance: package versions, the git hash and ``code_hash`` of the code that made a cell."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from gradstudy.schema import conf_dir

#: The package's own folder (its sources are what ``code_hash`` hashes).
PACKAGE = Path(__file__).resolve().parents[1]


def provenance() -> dict[str, Any]:
    """Package versions and the git hash and ``code_hash`` of the code, for ``meta.json`` (the device
    is the engine's to say: ``engine.devices.device_info``)."""
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
    return {"versions": versions, "git_hash": git_hash, "code_hash": code_hash()}


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
