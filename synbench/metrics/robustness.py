"""Representation-robustness bound of Nern et al. 2023 (spec: robustness_bound.md), attacked for real.

For the job's probe, fitted on one scale's train features, and input-space radii ``eps`` (pixel units):
- ``Delta_f(x)``: PGD through the model maximising ``||f(x') - f(x)||`` (a lower estimate of the sup; the
  shift reached by the end-to-end attack below also counts, as any point found is a valid lower estimate);
- bound (i): ``E[loss] + L ||w||_2 E[Delta_f]`` (spectral form; binary logistic head: L = 1) and the tighter
  data-dependent form from convexity, ``E[loss + sigma(-(m - ||w|| Delta_f)) ||w|| Delta_f]`` with ``m`` the
  signed margin (the softmax factor at its worst over the ball);
- criterion (ii): the fraction with ``m > ||w||_2 Delta_f`` (certified given the estimate);
- empirical: adversarial loss and robust accuracy of model+probe under PGD on the probe's loss, and the
  fraction of certified points the attack still flipped (``certified_but_broken``, which theory says is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synbench.attacks import PGD
from synbench.data import GaussianMixture, Split
from synbench.data.mixture import derive_seed
from synbench.encoders import autocast
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series, scale_index
from synbench.progress import bar



class RepresentationRobustness:
    name = "robustness"

    def __init__(self, attack: PGD, scale: float, n_points: int, pixel_range=None):
        self.attack = attack
        self.eps = list(attack.eps)
        if int(n_points) <= 0:
            raise ValueError(f"metrics.robustness.n_points={n_points!r} must be a positive integer")
        self.scale, self.n_points = float(scale), int(n_points)
        self.pixel_range = None if pixel_range is None else (float(pixel_range[0]), float(pixel_range[1]))
        if self.pixel_range is not None and not self.pixel_range[0] < self.pixel_range[1]:
            raise ValueError(f"mixture.pixel_range={list(pixel_range)} must be [lo, hi] with lo < hi")

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        scale_index(scales, self.scale, "metrics.robustness.scale")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        emb, encoder = inputs.embeddings, inputs.encoder
        i = scale_index(emb.scales, self.scale, "metrics.robustness.scale")
        probe = inputs.probe.fit(emb.z[Split.train][i], emb.y[Split.train][i])
        device = emb.z[Split.train].device
        dtype = inputs.precision.autocast_dtype(device)
        encoder.requires_grad_(False)
        w = probe.weight.float()  # [V, D]
        b = probe.bias.float()  # [V]
        w_norm = torch.linalg.vector_norm(probe.weight, dim=1).float()  # ||W||_2 of a single-logit head
        n = min(self.n_points, len(emb.y[Split.test][i]))

        rows = {k: [] for k in ("clean_loss", "adv_loss", "bound_spectral", "bound_data", "criterion",
                                "clean_accuracy", "robust_accuracy", "certified_but_broken")}
        delta_stats = {"mean": [], "median": [], "max": [], "from_end_to_end": []}
        for eps in bar(self.eps, "robustness attacks", "eps", inputs.progress):
            per_batch = []
            stream = inputs.mixture.stream(self.scale, Split.test, n, inputs.seed, self.attack.batch_size, device)
            for bi, (x, y) in enumerate(stream):
                gen = torch.Generator(device=device).manual_seed(derive_seed("attack", inputs.seed, eps, bi))
                per_batch.append(self._attack_batch(encoder, x, y, eps, w, b, w_norm, gen, dtype))
            res = {k: torch.cat([p[k] for p in per_batch], -1) for k in per_batch[0]}
            for k in rows:
                rows[k].append(res[k].mean(-1))
            delta = res["delta"]
            delta_stats["mean"].append(delta.mean())
            delta_stats["median"].append(delta.median())
            delta_stats["max"].append(delta.max())
            delta_stats["from_end_to_end"].append(res["delta_e2e_wins"].mean())
        return self._result(probe.labels, rows, delta_stats, w_norm)

    def _attack_batch(self, encoder, x, y, eps, w, b, w_norm, gen, dtype):
        """Per-point quantities [V, n] (V probe variants) for one batch at one eps."""
        sign = (2 * y - 1).float()
        with torch.no_grad(), autocast(x.device, dtype):
            f_clean = encoder(x).float()
        _, shift = self.attack.maximise(lambda xa: (encoder(xa).float() - f_clean).norm(dim=1), x, eps, gen,
                                        self.pixel_range, dtype)
        f_adv = []
        for v in range(len(w)):  # end-to-end: PGD on each variant's loss through the model
            def head_loss(xa, v=v):
                return F.softplus(-sign * (encoder(xa).float() @ w[v] + b[v]))

            x_adv, _ = self.attack.maximise(head_loss, x, eps, gen, self.pixel_range, dtype)
            with torch.no_grad(), autocast(x.device, dtype):
                f_adv.append(encoder(x_adv).float())
        f_adv = torch.stack(f_adv)  # [V, n, D]
        e2e_shift = (f_adv - f_clean).norm(dim=-1).max(0).values
        delta = torch.maximum(shift, e2e_shift)  # Delta_f estimate per point: the best of all attacks
        m = sign * (f_clean @ w.T + b).T  # [V, n] signed margins
        m_adv = sign * (torch.einsum("vnd,vd->vn", f_adv, w) + b[:, None])
        drop = w_norm[:, None] * delta  # the largest margin drop Delta_f allows
        loss = F.softplus(-m)
        return {
            "clean_loss": loss,
            "adv_loss": F.softplus(-m_adv),
            "bound_spectral": loss + drop,  # L = 1 for the binary logistic loss
            "bound_data": loss + torch.sigmoid(-(m - drop)) * drop,
            "criterion": (m > drop).float(),
            "clean_accuracy": (m > 0).float(),
            "robust_accuracy": (m_adv > 0).float(),
            # must stay 0: a certified point that the attack flipped would contradict criterion (ii)
            "certified_but_broken": ((m > drop) & (m_adv <= 0)).float(),
            "delta": delta,
            "delta_e2e_wins": (e2e_shift > shift).float(),
        }

    def _result(self, labels, rows, delta_stats, w_norm) -> MetricResult:
        res = MetricResult(self.name)
        eps = self.eps
        table = {"eps": eps, "labels": labels}
        for key in ("mean", "median", "max", "from_end_to_end"):
            values = torch.stack(delta_stats[key]).tolist()
            res.curves[f"delta_f/{key}"] = Curve("eps", eps, values)
            table[f"delta_f_{key}"] = values
        for v, lab in enumerate(labels):
            res.scalars[f"{lab}/w_norm"] = float(w_norm[v])
            for key, per_eps in rows.items():
                values = [float(t[v]) for t in per_eps]
                res.curves[f"{lab}/{key}"] = Curve("eps", eps, values)
                table[f"{lab}/{key}"] = values
                res.scalars[f"{lab}/{key}/max_eps"] = values[-1]
            res.plots.append(Plot(
                f"robustness_bound_vs_eps_{lab}", f"Loss bound vs empirical adversarial loss ({lab})",
                f"input-space epsilon ({self.attack.norm}, pixel units)", "logistic loss",
                [Series("bound (spectral)", eps, table[f"{lab}/bound_spectral"], "r--"),
                 Series("bound (data-dependent)", eps, table[f"{lab}/bound_data"], "m-."),
                 Series("empirical adversarial loss", eps, table[f"{lab}/adv_loss"], "b-"),
                 Series("clean loss", eps, table[f"{lab}/clean_loss"], "k:")]))
        res.tables["per_eps"] = table
        return res
