"""The classic papers as machine-checked claims on a study's results.

Each paper module (one per preset in ``conf/experiment``) defines a ``PAPER``: its claims, the numbers
the paper reports (with the table or figure they come from), its figures, and how a budget differs
from the paper's own setup. A claim measures one number per seed from the files of a study, takes
the mean and its 95% t interval over seeds, and compares that interval with a threshold fixed in the
module (with its source) before any run:

* **supported**: the whole interval is on the claimed side of the threshold;
* **contradicted**: the whole interval is on the other side;
* **inconclusive**: the interval straddles the threshold, or the cells it needs are missing.

Ratios of positive magnitudes (gradient and activation spreads) are measured on the log scale: the
geometric mean over seeds with the t interval of the logs mapped back (``of_seeds_log``), and a
ratio of two groups' geometric means with Welch's interval on the logs (``ratio``).

A cell is a (study, cell id) pair. A cell whose seeds all diverged is complete like any other: its
seeds' last healthy evaluations stand as their final values, so a diverging arm counts as
untrained, never as missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradstudy.papers.claims import Paper


def papers() -> dict[str, Paper]:
    """Every paper, by preset name."""
    from gradstudy.papers import (
        balduzzi2017,
        chapter11,
        clevert2015,
        de2020,
        glorot2010,
        he2015,
        ioffe2015,
        klambauer2017,
        pennington2017,
        schoenholz2017,
        xiao2018,
        zhang2019,
    )

    modules = (
        glorot2010,
        he2015,
        clevert2015,
        ioffe2015,
        klambauer2017,
        schoenholz2017,
        chapter11,
        balduzzi2017,
        zhang2019,
        de2020,
        pennington2017,
        xiao2018,
    )
    return {m.PAPER.name: m.PAPER for m in modules}
