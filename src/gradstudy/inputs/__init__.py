"""What goes into a cell, without jax: the datasets and their files, Shapeset, initial values, caches."""
