"""The typed result every metric returns, and the inputs every metric may draw on.

Tracking logs a ``MetricResult`` generically: ``scalars`` as metrics, ``curves`` as step metrics (with their
x grid), ``tables`` as JSON, ``plots`` rendered as line charts, ``params`` as run params. A new metric adds a
module here and a YAML under ``conf/metrics/``; nothing in the entry point or in tracking changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from synbench.data import GaussianMixture
from synbench.encoders import Embeddings, Encoder, LabelledFeatures, Precision
from synbench.probes import LinearProbe


def scale_index(scales: list[float], scale: float, key: str) -> int:
    """Where a metric's one ``scale`` sits on the mixture's grid (to float rounding); off the grid is a one-line
    error naming the config ``key``."""
    for i, s in enumerate(scales):
        if abs(s - scale) <= 1e-9:
            return i
    raise ValueError(f"{key}={scale:g} is not in mixture.scales={list(scales)}")


@dataclass
class Curve:
    """y over an x grid; logged as step metrics (step = index into ``x``)."""

    x_name: str
    x: list[float]
    y: list[float]


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    style: str = "-"


@dataclass
class Plot:
    """A line chart, described as data so that metrics stay free of plotting code."""

    name: str  # artifact file stem, e.g. "synbench_accuracy_vs_scale"
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]


@dataclass
class MetricResult:
    name: str
    scalars: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    tables: dict[str, dict] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)
    headline: tuple[str, ...] = ()  # scalar keys the job's closing summary prints

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "scalars": self.scalars,
            "params": self.params,
            "curves": {k: {"x_name": c.x_name, "x": c.x, "y": c.y} for k, c in self.curves.items()},
            "tables": self.tables,
        }


@dataclass
class MetricInputs:
    """What a job hands its metrics: the one embedding pass, plus the encoder and data for metrics that
    must go back through the model (attacks, noise paths)."""

    embeddings: Embeddings | None  # the mixture's pass; None when no metric of the job uses the mixture
    encoder: Encoder
    mixture: GaussianMixture | None
    probe: Probe  # the job's downstream probe (`probe` config group)
    seed: int
    precision: Precision  # autocast policy for metrics that run the model again
    progress: bool = True  # progress bars on the metric's long loops (attacks)
    labelled: LabelledFeatures | None = None  # the job's real dataset (`dataset` group), when it has one; label-free
    # metrics read only its images and features (labels may be absent: ``labelled.data.has_labels``)


class Probe(Protocol):
    def fit(self, z, y) -> LinearProbe: ...


class Metric(Protocol):
    name: str
    # what the metric reads; the job embeds only what some metric reads (class attributes; absent: the mixture).
    # uses_dataset: reads the job's dataset when it has one (label-free metrics also score its images);
    # needs_labels: cannot run without a labelled dataset (downstream: its truth is the labels)
    uses_mixture: bool = True
    uses_dataset: bool = False
    needs_labels: bool = False

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        """Raise a one-line ValueError before any heavy work if this metric cannot be computed."""

    def compute(self, inputs: MetricInputs) -> MetricResult: ...
