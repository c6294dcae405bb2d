"""Cell ids: a readable slug of a cell's choices plus the hash of its canonical config."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from gradstudy.schema import GROUPS


def config_hash(config: dict[str, Any]) -> str:
    """First 10 hex digits of the SHA-256 of ``config``, keys sorted."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cell_id(canonical: dict[str, Any]) -> str:
    """Readable slug of the cell's choices plus the hash of its canonical config
    (``gradstudy.cells.config.canonical``), e.g. ``he-relu-none-mnist5k-d10w100-sgd-1a2b3c4d5e``.

    The slug comes from the config itself, not from the command line, so the same config maps
    to the same folder whichever launcher, job number or spelling of the overrides produced it.
    """
    model = canonical.get("model", {})
    parts = [str(canonical.get(g, {}).get("name", "")) for g in GROUPS[:4]]
    if model.get("name") == "cnn":
        shape = f"cnnd{model.get('depth')}c{model.get('channels')}k{model.get('kernel')}"
    else:
        shape = f"{'res' if model.get('name') == 'resmlp' else ''}d{model.get('depth')}w{model.get('width')}"
    parts += [shape, str(canonical.get("optim", {}).get("name", ""))]
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", part) for part in parts)
    return f"{slug}-{config_hash(canonical)}"
