"""Encoders map pixel-space images to representations; normalisation lives inside their forward."""

from synbench.encoders.base import Encoder, EncoderError, Precision, autocast
from synbench.encoders.embed import Embeddings, embed_mixture

__all__ = ["Encoder", "EncoderError", "Precision", "autocast", "Embeddings", "embed_mixture"]
