"""Label-free spectrum baselines on the embeddings the job already has: RankMe and alpha-ReQ, per scale.

- RankMe (Garrido et al. 2023): with ``sigma`` the singular values of the [n, D] embedding matrix,
  ``p_k = sigma_k / ||sigma||_1 + eps`` and ``RankMe = exp(-sum_k p_k log p_k)``: an effective rank, D for an
  isotropic cloud, r for a rank-r one.
- alpha-ReQ (Agrawal et al. 2022): the decay exponent ``alpha`` of the covariance eigenspectrum
  ``lambda_k ~ k^-alpha``, fitted by least squares of ``log lambda_k`` on ``log k`` over the 1-based index range
  ``[fit_start, fit_stop]`` (``fit_stop`` null: the last eigenvalue above ``rel_floor * lambda_1``).
No model pass: one SVD and one eigendecomposition of the train features per scale, in float64 on their device.
Both papers measure the features of real data; when the job has a ``dataset`` the same two numbers are also
computed on its train images' features (``spectrum/data/*``, never reading a label) beside the mixture's.
"""

from __future__ import annotations

import logging
import math

import torch

from synbench.data import GaussianMixture, Split
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series, scale_index

log = logging.getLogger(__name__)



def rankme(z: torch.Tensor, eps: float) -> float:
    sigma = torch.linalg.svdvals(z.double())
    total = sigma.sum()
    if not total > 0:
        return float("nan")  # a zero matrix has no spectrum to speak of
    p = sigma / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alpha_req(z: torch.Tensor, fit_start: int, fit_stop: int | None, rel_floor: float) -> float:
    z = z.double()
    cov = torch.cov(z.T) if z.shape[1] > 1 else z.var().reshape(1, 1)
    lam = torch.linalg.eigvalsh(cov).flip(0)  # descending
    if not lam[0] > 0:
        return float("nan")
    usable = int((lam > rel_floor * lam[0]).sum())
    stop = usable if fit_stop is None else min(int(fit_stop), usable)
    if stop - fit_start + 1 < 2:
        return float("nan")  # fewer than two points: no slope
    k = torch.arange(fit_start, stop + 1, dtype=torch.float64, device=z.device)
    x, y = k.log(), lam[fit_start - 1:stop].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(-slope)


class Spectrum:
    name = "spectrum"
    uses_dataset = True  # scores the job's real images too, when it has some

    def __init__(self, scale: float, rankme_eps: float, fit_start: int, fit_stop: int | None, rel_floor: float):
        if int(fit_start) < 1:
            raise ValueError(f"metrics.spectrum.fit_start={fit_start!r} must be >= 1 (1-based eigenvalue index)")
        if fit_stop is not None and int(fit_stop) <= int(fit_start):
            raise ValueError(f"metrics.spectrum.fit_stop={fit_stop!r} must be > fit_start={fit_start} or null")
        if not (rankme_eps >= 0 and 0 <= rel_floor < 1):
            raise ValueError(f"metrics.spectrum.rankme_eps={rankme_eps!r} must be >= 0 and rel_floor={rel_floor!r} "
                             f"in [0, 1)")
        self.scale, self.eps = float(scale), float(rankme_eps)
        self.fit_start, self.fit_stop, self.rel_floor = int(fit_start), fit_stop, float(rel_floor)

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        scale_index(scales, self.scale, "metrics.spectrum.scale")

    def compute(self, inputs: MetricInputs) -> MetricResult:
        emb = inputs.embeddings
        scales = [float(s) for s in emb.scales]
        ranks = [rankme(z, self.eps) for z in emb.z[Split.train]]
        alphas = [alpha_req(z, self.fit_start, self.fit_stop, self.rel_floor) for z in emb.z[Split.train]]
        head = scale_index(scales, self.scale, "metrics.spectrum.scale")
        width = emb.z[Split.train].shape[-1]
        res = MetricResult(self.name, params={"spectrum.width": width}, headline=("rankme", "alpha_req"))
        res.scalars.update(rankme=ranks[head], rankme_fraction=ranks[head] / width, alpha_req=alphas[head])
        # curve keys differ from the scalars': MLflow would merge a scalar and a curve of one key into one history
        res.curves.update({"rankme/per_scale": Curve("scale", scales, ranks),
                           "alpha_req/per_scale": Curve("scale", scales, alphas)})
        res.tables["per_scale"] = {"scale": scales, "rankme": ranks, "alpha_req": alphas, "width": width}
        res.plots.append(Plot("spectrum_vs_scale", f"RankMe (of {width} dims) and alpha-ReQ per scale",
                              "mean-shift scale s", "value",
                              [Series("RankMe / width", scales, [r / width for r in ranks]),
                               Series("alpha-ReQ", scales, alphas, "--")]))
        if any(not math.isfinite(v) for v in ranks + alphas):
            log.warning("spectrum: NaN at some scales: the representation is degenerate there (constant, or "
                        "fewer than two eigenvalues above rel_floor)")
        if inputs.labelled is not None:  # the same numbers on real images: the papers' own input
            z = inputs.labelled.z[Split.train]
            rank, alpha = rankme(z, self.eps), alpha_req(z, self.fit_start, self.fit_stop, self.rel_floor)
            res.scalars.update({"data/rankme": rank, "data/rankme_fraction": rank / width, "data/alpha_req": alpha})
            res.tables["data"] = {"dataset": inputs.labelled.data.name, "split": "train", "n": len(z),
                                  "rankme": rank, "alpha_req": alpha}
            res.headline += ("data/rankme", "data/alpha_req")
        return res
