"""Inputs: class-conditional Gaussian mixtures generated on the device in seeded chunks, and their real
siblings, labelled images read from local files, with the one transform that brings them to an encoder."""

from synbench.data.labelled import LabelledDataset
from synbench.data.mixture import GaussianMixture, Split, mean_direction
from synbench.data.transform import InputTransform

__all__ = ["GaussianMixture", "InputTransform", "LabelledDataset", "Split", "mean_direction"]
