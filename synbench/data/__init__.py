"""Synthetic inputs: class-conditional Gaussian mixtures, generated on the device in seeded chunks."""

from synbench.data.mixture import GaussianMixture, Split, mean_direction

__all__ = ["GaussianMixture", "Split", "mean_direction"]
