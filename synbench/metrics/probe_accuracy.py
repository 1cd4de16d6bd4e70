"""The job's downstream probe on every scale: clean accuracy and exact robust accuracy in representation space.

A linear head's worst perturbation of radius r lowers the signed margin by exactly ``r ||w||_*``, so robust
accuracy here is exact, not an attack's estimate. Sweeping ``probe.radius`` and reading these curves beside
SynBench's ``recommended_radius`` is how a user picks the robust probe SynBench suggests.
"""

from __future__ import annotations

import torch

from synbench.data import GaussianMixture, Split
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series


class ProbeAccuracy:
    name = "probe"

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        pass

    def compute(self, inputs: MetricInputs) -> MetricResult:
        emb = inputs.embeddings
        clean, robust, radius, labels = [], [], [], None
        for i in range(len(emb.scales)):
            probe = inputs.probe.fit(emb.z[Split.train][i], emb.y[Split.train][i])
            z, y = emb.z[Split.test][i], emb.y[Split.test][i]
            clean.append(probe.accuracy(z, y, torch.zeros_like(probe.radius)))
            robust.append(probe.accuracy(z, y))
            radius.append(probe.radius)
            labels = probe.labels
        clean_a, robust_a, radius_a = (torch.stack(v, 1).cpu().numpy() for v in (clean, robust, radius))  # [E, S]
        scales = [float(s) for s in emb.scales]
        res = MetricResult(self.name)
        for j, lab in enumerate(labels):
            res.scalars[f"clean_accuracy/{lab}"] = float(clean_a[j].mean())
            res.scalars[f"robust_accuracy/{lab}"] = float(robust_a[j].mean())
            res.curves[f"clean_accuracy/{lab}"] = Curve("scale", scales, clean_a[j].tolist())
            res.curves[f"robust_accuracy/{lab}"] = Curve("scale", scales, robust_a[j].tolist())
            res.curves[f"radius/{lab}"] = Curve("scale", scales, radius_a[j].tolist())
        res.tables["per_scale"] = {"scale": scales, "labels": labels, "clean_accuracy": clean_a.tolist(),
                                   "robust_accuracy": robust_a.tolist(), "radius": radius_a.tolist()}
        res.plots.append(Plot("probe_accuracy_vs_scale", "Downstream probe: clean and robust accuracy",
                              "mean-shift scale s", "test accuracy",
                              [Series(f"clean, {lab}", scales, clean_a[j].tolist()) for j, lab in enumerate(labels)]
                              + [Series(f"robust, {lab}", scales, robust_a[j].tolist(), "--")
                                 for j, lab in enumerate(labels)]))
        return res
