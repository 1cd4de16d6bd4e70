"""Encoders map pixel-space images to representations; normalisation lives inside their forward."""

from synbench.encoders.base import Encoder, EncoderError, Precision, autocast
from synbench.encoders.embed import Embeddings, LabelledFeatures, embed_dataset, embed_mixture

__all__ = ["Encoder", "EncoderError", "Precision", "autocast", "Embeddings", "LabelledFeatures", "embed_dataset",
           "embed_mixture"]
