"""RMQM, the representation manifold quality metric (van der Merwe, Newman & Barnard 2022; spec: rmqm.md).

Every test input of one scale is pushed along a path of growing alterations, and its L2-normalised
representation ``z^a`` is tracked over the levels ``a = 0..n-1``:
- ``o^a = ||z^a - z^0||`` (distance from the original) and ``p^a = ||z^a - z^(a-1)||`` (step), ``a >= 1``;
- their relative changes ``ro^a``, ``rp^a`` (``a >= 2``); a point with a non-finite row is dropped from that
  statistic only;
- ``D_o, D_p`` the means of ``o, p``; ``S_o, S_p`` the means of ``|ro|, |rp|``;
- ``RMQM = ln(1 + D_o + D_p + 1/S_o + 1/S_p)``: large and steady steps score high.
Two schedules, scored separately:
- white noise: ``x_a = x + sigma_a eps_a`` with ``sigma_a = linspace(0, sigma_max, n)[a]`` and fresh seeded
  noise per level (not cumulative), clipped to ``pixel_range`` when one is set, at every level: level 0 is the
  clipped clean input, and the PGD path starts from it too (its reference representation and its ball);
- label-free PGD maximising ``||f(x') - f(x)||`` (linf, step ``alpha``, ball ``radius``, no random start: the
  first step leaves from a tiny seeded offset, since the gradient is zero at ``x' = x``). Level ``a`` is the
  ``a``-th iterate of ONE run of n-1 steps recorded by the shared ``ascend`` loop: n-1 forward+backward
  passes, not the n^2/2 of restarting each level from the clean input (the same path: the objective has no
  randomness after the first step).
A constant (collapsed) representation moves nowhere: NaN and a warning, never a number that looks real.
The paper tracks real data points; when the job has a ``dataset``, both paths also start from its first test
images (``rmqm/data/*``, never reading a label), in the data's pixel units through the job's input transform,
clipped to the data's valid range [0, 1] at every level. The mixture's paths keep ``pixel_range`` (default
unclipped: mixture samples are not images, and clipping them saturates most of their pixels).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F

from synbench.attacks import ascend, project
from synbench.data import GaussianMixture, Split
from synbench.data.mixture import derive_seed
from synbench.encoders import autocast
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series, scale_index
from synbench.progress import bar

log = logging.getLogger(__name__)



def trajectory_stats(z: torch.Tensor) -> dict[str, float | list[float]]:
    """RMQM of trajectories ``z`` [levels, points, D] (raw features; normalised here), float64."""
    z = F.normalize(z.double(), dim=-1, eps=0.0)  # a zero vector has no direction: NaN, dropped below
    o = (z[1:] - z[0]).norm(dim=-1)  # [n-1, N], levels 1..n-1
    p = (z[1:] - z[:-1]).norm(dim=-1)
    out: dict[str, float | list[float]] = {}
    for name, d in (("o", o), ("p", p)):
        rel = (d[1:] - d[:-1]) / d[:-1]  # levels 2..n-1
        keep_d = torch.isfinite(d).all(0)
        keep_r = torch.isfinite(rel).all(0)
        out[f"D_{name}"] = float(d[:, keep_d].mean()) if keep_d.any() else math.nan
        out[f"S_{name}"] = float(rel[:, keep_r].abs().mean()) if keep_r.any() else math.nan
        out[f"curve_{name}"] = d[:, keep_d].mean(1).tolist() if keep_d.any() else [math.nan] * len(d)
    parts = (out["D_o"], out["D_p"], out["S_o"], out["S_p"])
    if not all(math.isfinite(v) for v in parts) or out["D_o"] + out["D_p"] == 0:
        out["rmqm"] = math.nan  # nothing moved (or nothing usable): undefined, not a score
    else:  # a perfectly steady path (S = 0) is the limit +inf
        inv = [1 / s if s > 0 else math.inf for s in (out["S_o"], out["S_p"])]
        out["rmqm"] = math.log(1 + out["D_o"] + out["D_p"] + sum(inv))
    return out


class RMQM:
    name = "rmqm"
    uses_dataset = True  # its paths also start from the job's real images, when it has some

    def __init__(self, scale: float, n_points: int, batch_size: int, noise_levels: int, sigma_max: float,
                 pgd_levels: int, pgd_alpha: float, pgd_radius: float, pgd_offset: float, pixel_range=None):
        for key, value in (("n_points", n_points), ("batch_size", batch_size)):
            if int(value) <= 0:
                raise ValueError(f"metrics.rmqm.{key}={value!r} must be a positive integer")
        for key, value in (("noise_levels", noise_levels), ("pgd_levels", pgd_levels)):
            if int(value) < 3:
                raise ValueError(f"metrics.rmqm.{key}={value!r} must be >= 3 (level 0 is the clean input, and "
                                 f"relative changes need two more)")
        for key, value in (("sigma_max", sigma_max), ("pgd_alpha", pgd_alpha), ("pgd_radius", pgd_radius),
                           ("pgd_offset", pgd_offset)):
            if not value > 0:
                raise ValueError(f"metrics.rmqm.{key}={value!r} must be > 0")
        self.scale, self.n_points, self.batch_size = float(scale), int(n_points), int(batch_size)
        self.noise_levels, self.sigma_max = int(noise_levels), float(sigma_max)
        self.pgd_levels, self.alpha, self.radius = int(pgd_levels), float(pgd_alpha), float(pgd_radius)
        self.offset = float(pgd_offset)
        self.pixel_range = None if pixel_range is None else (float(pixel_range[0]), float(pixel_range[1]))

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        scale_index(scales, self.scale, "metrics.rmqm.scale")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        emb = inputs.embeddings
        device = emb.z[Split.test].device
        dtype = inputs.precision.autocast_dtype(device)
        encoder = inputs.encoder.requires_grad_(False)
        n = min(self.n_points, emb.y[Split.test].shape[1])
        stream = inputs.mixture.stream(self.scale, Split.test, n, inputs.seed, self.batch_size, device)
        paths = self._paths(encoder, stream, n, dtype, inputs, "")
        if inputs.labelled is not None:  # the paper's own input: real images, each kept a valid image
            feats = inputs.labelled
            on_data = copy.copy(self)
            on_data.pixel_range = (0.0, 1.0)  # the data's pixel units
            n_data = min(self.n_points, feats.data.count(Split.test))
            stream = feats.data.stream(Split.test, self.batch_size, feats.z[Split.test].device, n_data)
            paths.update(on_data._paths(lambda xa: encoder(feats.transform(xa)), stream, n_data, dtype, inputs,
                                        "data/"))
        return self._result(paths)

    def _paths(self, f, stream, n: int, dtype, inputs: MetricInputs, prefix: str) -> dict[str, torch.Tensor]:
        """Both paths of every point of ``stream`` through ``f`` (inputs -> features), named ``prefix`` + schedule."""
        noise, pgd = [], []
        for b, (x, _) in enumerate(bar(stream, f"rmqm {prefix or 'mixture/'}paths", "batch", inputs.progress,
                                       total=math.ceil(n / self.batch_size))):  # labels are never read
            noise.append(self.noise_path(f, x, dtype, derive_seed(f"rmqm-{prefix}noise", inputs.seed, b)))
            pgd.append(self.pgd_path(f, x, dtype, derive_seed(f"rmqm-{prefix}pgd", inputs.seed, b)))
        return {f"{prefix}noise": torch.cat(noise, 1), f"{prefix}pgd": torch.cat(pgd, 1)}

    def noise_path(self, encoder, x, dtype, seed: int) -> torch.Tensor:
        """Features [levels, batch, D] of ``x + sigma_a eps_a``, fresh seeded noise per level."""
        gen = torch.Generator(device=x.device).manual_seed(seed)
        sigmas = torch.linspace(0, self.sigma_max, self.noise_levels).tolist()
        out = []
        with torch.inference_mode(), autocast(x.device, dtype):
            for sigma in sigmas:
                xa = x + sigma * torch.randn(x.shape, generator=gen, device=x.device) if sigma > 0 else x
                if self.pixel_range is not None:  # every level, level 0 included (the spec's clip)
                    xa = xa.clamp(*self.pixel_range)
                out.append(encoder(xa).float())
        return torch.stack(out)

    def pgd_path(self, encoder, x, dtype, seed: int) -> torch.Tensor:
        """Features [levels, batch, D]: level 0 the clean input, level a the a-th iterate of one PGD run."""
        gen = torch.Generator(device=x.device).manual_seed(seed)
        if self.pixel_range is not None:  # level 0 is clipped like every level: the reference and the ball's centre
            x = x.clamp(*self.pixel_range)
        with torch.no_grad(), autocast(x.device, dtype):
            f0 = encoder(x).float()
        start = project(x + self.offset * (2 * torch.rand(x.shape, generator=gen, device=x.device) - 1), x,
                        self.radius, "linf", self.pixel_range)
        feats = {}

        def shift(xa):
            feats["z"] = encoder(xa).float()
            return (feats["z"] - f0).norm(dim=1)

        path = [f0]
        for k, _ in enumerate(ascend(shift, x, start, self.radius, self.alpha, "linf", self.pgd_levels - 1,
                                     self.pixel_range, dtype)):
            if k > 0:  # iterate 0 is the offset start, not a level
                path.append(feats["z"].detach())
        return torch.stack(path)

    def _result(self, paths: dict[str, torch.Tensor]) -> MetricResult:
        res = MetricResult(self.name, headline=tuple(paths))
        series = []
        for schedule, z in paths.items():
            stats = trajectory_stats(z)
            res.scalars[schedule] = stats["rmqm"]
            for key in ("D_o", "D_p", "S_o", "S_p"):
                res.scalars[f"{schedule}/{key}"] = stats[key]
            levels = [float(a) for a in range(1, len(z))]
            noisy = schedule.endswith("noise")
            x_name = "sigma" if noisy else "pgd_step"
            grid = torch.linspace(0, self.sigma_max, self.noise_levels)[1:].tolist() if noisy else levels
            for c in ("o", "p"):
                res.curves[f"{schedule}/{c}"] = Curve(x_name, grid, stats[f"curve_{c}"])
                series.append(Series(f"{schedule}: {'distance from the original' if c == 'o' else 'step'} ({c})",
                                     levels, stats[f"curve_{c}"], "-" if c == "o" else "--"))
            if math.isnan(stats["rmqm"]):
                log.warning("rmqm/%s is NaN: the representation does not move along the %s path (a constant or "
                            "collapsed representation), so RMQM is undefined", schedule, schedule)
        res.plots.append(Plot("rmqm_paths", "RMQM: mean distance and step along each path", "level a",
                              "||z^a - z^0|| (o), ||z^a - z^(a-1)|| (p)", series))
        return res
