"""What a cell is: the config schema and its validation, the options' registries, the statistics,
grouping into programs, and the compatibility warnings. No jax."""
