"""gradstudy: measure why deep networks are hard to train, layer by layer, over seeds and grids."""

from gradstudy.store.study import Study, load_study

__all__ = ["Study", "load_study"]
