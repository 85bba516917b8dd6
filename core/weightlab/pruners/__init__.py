"""Built-in pruners, so that every install can prune: ``magnitude``, ``global_magnitude``,
``random`` (registered by :mod:`weightlab.builtins`). :class:`ScorePruner` and
:class:`SelectParams` are the base that plugin pruners (diagonal Fisher, WoodFisher) build on.

These modules import torch only inside methods: listing components stays cheap.
"""

from weightlab.pruners.base import (
    SELECTIONS,
    ScorePruner,
    SelectParams,
    parse_nm,
    split_flat,
)
from weightlab.pruners.magnitude import (
    GlobalMagnitudePruner,
    MagnitudePruner,
    RandomParams,
    RandomPruner,
)

PRUNERS = [MagnitudePruner, GlobalMagnitudePruner, RandomPruner]

__all__ = ["PRUNERS", "SELECTIONS", "GlobalMagnitudePruner", "MagnitudePruner", "RandomParams",
           "RandomPruner", "ScorePruner", "SelectParams", "parse_nm", "split_flat"]
