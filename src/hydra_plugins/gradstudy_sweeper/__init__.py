"""Hydra sweeper plugin of gradstudy: one job per group of cells that share a compiled program."""
