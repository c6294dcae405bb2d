"""Results on disk, without jax: cell ids, atomic verified writes, cell states, locks, sweep markers,
provenance, the engine's arrays as tidy tables, and ``load_study``."""
