"""Metrics: each takes the shared embeddings (and, when it needs them, the encoder and data) and returns a
``MetricResult`` that the tracking layer logs without knowing which metric made it."""

from synbench.metrics.base import Curve, Metric, MetricInputs, MetricResult, Plot, Series

__all__ = ["Curve", "Metric", "MetricInputs", "MetricResult", "Plot", "Series"]
