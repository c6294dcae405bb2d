"""``hydra/sweeper=gradstudy``: Hydra's basic sweeper, with the cells that share a program shape
handed to one job.

The sweep's cells are expanded and composed exactly as the basic sweeper does (it composes every
cell once to catch bad overrides before launching anything). Cells whose programs have the same
shape (``gradstudy.cells.grouping.program_key``) become one job: the first cell's overrides plus the
run-only key ``members``, the list of each cell's own overrides, which ``gradstudy.run`` composes
one by one. A group of one is an ordinary job. Grouping happens before the launcher, so every
launcher (basic, joblib, submitit, SLURM) runs batched groups.

``hydra.sweeper.group=false`` gives one job per cell; ``hydra.sweeper.max_cells=N`` caps a group
(for spreading a sweep over more jobs); ``hydra.sweeper.zip=[act,init]`` pairs the values of those
keys' sweeps element by element instead of crossing them. Nothing here imports jax: Hydra imports every plugin when
any app starts.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class GradstudySweeperConf:
    _target_: str = "hydra_plugins.gradstudy_sweeper.sweeper.GradstudySweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    #: Hand the cells that share a program shape to one job (false: one job per cell).
    group: bool = True
    #: The most cells in one job's group (null: no cap; memory still splits a group inside its job).
    max_cells: int | None = None
    #: Keys whose sweeps pair up element by element instead of crossing: ``[act,init]`` with
    #: ``act=tanh,relu init=xavier,he`` gives the cells (tanh, xavier) and (relu, he).
    zip: list[str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="gradstudy", node=GradstudySweeperConf, provider="gradstudy")


def quote(override: str) -> str:
    """``override`` as one single-quoted element of a Hydra override list."""
    return "'" + override.replace("\\", "\\\\").replace("'", "\\'") + "'"


def members_override(cells: list[list[str]]) -> str:
    """The ``members=[[...], ...]`` override that hands ``cells`` (each one's overrides) to one job."""
    return "members=[" + ",".join("[" + ",".join(quote(o) for o in cell) + "]" for cell in cells) + "]"


class GradstudySweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        group: bool = True,
        max_cells: int | None = None,
        zip: list[str] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        if max_cells is not None and max_cells < 1:
            raise ValueError(f"hydra.sweeper.max_cells: must be >= 1 or null, got {max_cells}")
        if zip is not None and len(zip) < 2:
            raise ValueError(f"hydra.sweeper.zip: name at least two keys to pair, got {list(zip)}")
        self.group = group
        self.max_cells = max_cells
        self.zip = list(zip) if zip else []

    def _program_key(self, overrides: list[str]) -> str | None:
        """The cell's program key, or None (a job of its own) when its config does not resolve:
        its job then records why."""
        from gradstudy.cells.config import resolved
        from gradstudy.cells.grouping import COMPOSED, program_key
        from gradstudy.schema import ARM

        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        arm = cfg.hydra.runtime.choices.get(ARM)
        with open_dict(cfg):
            del cfg["hydra"]
        COMPOSED[tuple(overrides)] = (cfg, arm)
        try:
            return program_key(resolved(cfg))
        except Exception:
            return None

    def jobs(self, cells: list[list[str]]) -> list[list[str]]:
        """One job's overrides per group of ``cells``, in the order the groups first appear."""
        from gradstudy.cells.grouping import COMPOSED, group_by_key

        if not self.group:
            self.validate_batch_is_legal(cells)
            return cells
        keys = [self._program_key(cell) for cell in cells]
        groups = group_by_key(cells, keys, self.max_cells or len(cells) or 1)
        log.info(f"gradstudy sweeper: {len(cells)} cells in {len(groups)} jobs (cells sharing a program train as one)")
        for group in groups:  # a job's first cell is the job's own config: the launcher composes it
            COMPOSED.pop(tuple(group[0]), None)
        return [group[0] if len(group) == 1 else [*group[0], members_override(group)] for group in groups]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(params_conf)
        from gradstudy.cells.expand import expand

        try:
            cells = expand(overrides, self.zip)
        except ValueError as err:  # one line naming the key, before any job starts
            print(f"gradstudy: hydra.sweeper.{err}", file=sys.stderr)
            sys.exit(2)
        jobs = self.jobs(cells)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # raises when the job raised
            initial_job_idx += len(batch)
            returns.append(results)
        return returns
