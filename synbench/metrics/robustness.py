"""Representation-robustness bound of Nern et al. 2023 (spec: robustness_bound.md), attacked for real.

For the job's probe, fitted on one scale's train features, and input-space radii ``eps`` (pixel units):
- ``Delta_f(x)``: PGD through the model maximising ``||f(x') - f(x)||`` (a lower estimate of the sup; the
  shift reached by the end-to-end attack below also counts, as any point found is a valid lower estimate);
- bound (i): ``E[loss] + L ||w||_2 E[Delta_f]`` (spectral form; binary logistic head: L = 1) and the tighter
  data-dependent form from convexity, ``E[loss + sigma(-(m - ||w|| Delta_f)) ||w|| Delta_f]`` with ``m`` the
  signed margin (the softmax factor at its worst over the ball);
- criterion (ii): the fraction with ``m > ||w||_2 Delta_f`` (certified given the estimate);
- empirical: adversarial loss and robust accuracy of model+probe under PGD on the probe's loss, and the
  fraction of certified points the attack still flipped (``certified_but_broken``, which theory says is 0);
- the raw-input reference per radius, in closed form (``raw_reference``): the fraction the Bayes-optimal
  classifier of the raw mixture certifies, ``Phi((s - eps ||mu||_*) / sigma)`` for equal priors, and the best
  robust accuracy any classifier can reach. A radius where the reference certifies under ``VACUOUS_BELOW`` is
  marked vacuous (and warned about): the attack there moves points across the mixture's class gap, so every
  encoder's criterion is ~0 whatever its quality.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from synbench.attacks import PGD
from synbench.data import GaussianMixture, Split
from synbench.data.mixture import derive_seed
from synbench.encoders import autocast
from synbench.metrics.base import Curve, MetricInputs, MetricResult, Plot, Series, scale_index
from synbench.progress import bar

log = logging.getLogger(__name__)

VACUOUS_BELOW = 0.01  # reference certified fraction under which a radius is marked vacuous
HALF = 0.5
PER_RADIUS = ("criterion", "bound_data", "robust_accuracy")  # per-variant curves also logged as one scalar per radius


def eps_label(eps: float) -> str:
    """The per-radius suffix of scalar names, as the downstream metric writes it (``eps_0.05``)."""
    return f"eps_{eps:g}"


def linear_certified(gap: float, noise_std: float, prior: float, drop: float) -> float:
    """Fraction of points that the Bayes rule of two classes ``N(+-gap, noise_std^2)`` along one unit direction
    (class-1 prior ``prior``) keeps correct when each point's projection may move by ``drop`` against its class.
    ``drop = 0``: the rule's accuracy. The rule thresholds at ``t = noise_std^2 log((1-p)/p) / (2 gap)``."""
    if prior == 0.5:
        t = 0.0
    elif gap > 0:
        t = noise_std ** 2 * math.log((1 - prior) / prior) / (2 * gap)
    else:  # no signal: the rule always says the more likely class
        t = math.inf if prior < 0.5 else -math.inf
    return float(prior * ndtr((gap - t - drop) / noise_std) + (1 - prior) * ndtr((gap + t - drop) / noise_std))


def _drop_at(level: float, gap: float, noise_std: float, prior: float) -> float:
    """The margin drop at which ``linear_certified`` falls to ``level`` (0 when it is below it already)."""
    if prior == 0.5:
        return max(0.0, gap - noise_std * float(ndtri(level)))
    if linear_certified(gap, noise_std, prior, 0.0) <= level:
        return 0.0
    hi = gap + noise_std
    while linear_certified(gap, noise_std, prior, hi) > level:
        hi *= 2
    return brentq(lambda drop: linear_certified(gap, noise_std, prior, drop) - level, 0.0, hi, xtol=1e-15)


@dataclass(frozen=True)
class RawReference:
    """Closed-form references of the raw mixture at the attacked scale, one value per radius of ``eps``.

    ``certified``: fraction of points the Bayes-optimal raw-input classifier ``sign(mu . (x - mean) - t)`` keeps
    correct under any perturbation of norm <= eps: its margin along ``mu`` is ``N(s, sigma^2)`` per class and a
    perturbation lowers ``mu . x`` by at most ``eps ||mu||_*`` (Hoelder; ``||mu||_1`` for l-inf, ``||mu||_2 = 1``
    for l2), attained at ``-eps sign(mu)`` resp. ``-eps mu``. ``optimal``: the best robust accuracy of *any*
    classifier (Bhagoji, Cullina, Mittal 2019): the adversary can translate the classes onto
    ``N(+-(s mu - z), sigma^2 I)`` for any ``||z|| <= eps``, and the linear rule along ``s mu - z*`` (``z*`` the
    nearest such point to ``s mu``) loses exactly that much, so it is the Bayes accuracy at the gap
    ``min ||s mu - z||_2``. Both ignore a pixel box (docs/robustness.md says why)."""

    norm: str
    scale: float
    noise_std: float
    dual_norm: float  # ||mu||_*: how far one unit of radius moves mu . x
    eps: tuple[float, ...]
    certified: tuple[float, ...]
    optimal: tuple[float, ...]
    radius_at_half: float  # the radius where ``certified`` is 0.5 (for equal priors: s / ||mu||_*)
    radius_vacuous: float  # the radius where ``certified`` falls to VACUOUS_BELOW

    @property
    def vacuous(self) -> tuple[bool, ...]:
        return tuple(c < VACUOUS_BELOW for c in self.certified)


def raw_reference(mu: torch.Tensor, scale: float, noise_std: float, prior: float, norm: str,
                  eps: list[float]) -> RawReference:
    """``RawReference`` of a mixture with unit mean direction ``mu`` (any shape) at one ``scale``."""
    flat = mu.detach().double().flatten().cpu()
    length = float(flat.norm())  # 1 up to float32 rounding; the unit direction is flat / length
    gap = scale * length  # the classes sit at +-gap along the unit direction
    dual = float(flat.abs().sum() if norm == "linf" else length) / length  # ||unit direction||_*
    certified, optimal = [], []
    for e in eps:
        certified.append(linear_certified(gap, noise_std, prior, e * dual))
        if norm == "linf":  # the nearest point of the box around 0 to s mu: shrink each |s mu_i| by e, clip at 0
            nearest = float((scale * flat.abs() - e).clamp_min(0).norm())
        else:
            nearest = max(0.0, gap - e)
        optimal.append(linear_certified(nearest, noise_std, prior, 0.0))
    return RawReference(norm, float(scale), float(noise_std), dual, tuple(float(e) for e in eps), tuple(certified),
                        tuple(optimal), _drop_at(HALF, gap, noise_std, prior) / dual,
                        _drop_at(VACUOUS_BELOW, gap, noise_std, prior) / dual)


def warn_vacuous(ref: RawReference, shape: tuple[int, ...], key: str = "attack.eps") -> str | None:
    """One warning line naming the vacuous radii, what the reference certifies there, why and the fix."""
    bad = [(e, c, o) for e, c, o, v in zip(ref.eps, ref.certified, ref.optimal, ref.vacuous) if v]
    if not bad:
        return None
    e0 = bad[0][0]
    dual = "||mu||_1" if ref.norm == "linf" else "||mu||_2"
    fix = "e.g. attack=pgd_linf_small or " if ref.norm == "linf" else "e.g. "
    msg = (f"{key}={', '.join(f'{e:g}' for e, _, _ in bad)} vacuous for this {'x'.join(map(str, shape))} input: "
           f"even the Bayes-optimal raw-input classifier certifies {', '.join(f'{c:.2g}' for _, c, _ in bad)} of "
           f"the points (best any classifier can: {', '.join(f'{o:.2g}' for _, _, o in bad)}): {ref.norm} radius "
           f"{e0:g} x {dual} {ref.dual_norm:.3g} = {e0 * ref.dual_norm:.3g} moves a point along mu past the class "
           f"half-gap s = {ref.scale:g} (noise_std {ref.noise_std:g}), so the criterion there cannot tell encoders "
           f"apart; use radii below {ref.radius_at_half:.3g} (where the reference certifies 50%), {fix}"
           f"metrics.robustness.attack.eps=[...]")
    log.warning(msg)
    return msg


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
        mix = inputs.mixture
        reference = raw_reference(mix.mu("cpu"), self.scale, mix.noise_std, mix.prior, self.attack.norm, self.eps)
        warn_vacuous(reference, tuple(mix.shape))
        top = max(self.eps)
        dense = raw_reference(mix.mu("cpu"), self.scale, mix.noise_std, mix.prior, self.attack.norm,
                              [top * k / 100 for k in range(101)])  # the reference curves of the plot

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
        return self._result(probe.labels, rows, delta_stats, w_norm, reference, dense)

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

    def _result(self, labels, rows, delta_stats, w_norm, ref: RawReference, dense: RawReference) -> MetricResult:
        res = MetricResult(self.name)
        eps = self.eps
        table = {"eps": eps, "labels": labels, "reference_certified": list(ref.certified),
                 "reference_optimal": list(ref.optimal), "vacuous": list(ref.vacuous)}
        res.curves["reference/certified"] = Curve("eps", eps, list(ref.certified))
        res.curves["reference/optimal"] = Curve("eps", eps, list(ref.optimal))
        res.scalars.update({"reference/dual_norm": ref.dual_norm, "reference/radius_at_0.5": ref.radius_at_half,
                            f"reference/radius_at_{VACUOUS_BELOW:g}": ref.radius_vacuous,
                            "reference/n_vacuous": float(sum(ref.vacuous))})
        for e, c, o, v in zip(eps, ref.certified, ref.optimal, ref.vacuous):
            res.scalars[f"reference/certified/{eps_label(e)}"] = c
            res.scalars[f"reference/optimal/{eps_label(e)}"] = o
            res.scalars[f"reference/vacuous/{eps_label(e)}"] = float(v)
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
                res.scalars[f"{lab}/{key}/max_eps"] = values[-1]  # the last radius: the key older runs have
                if key in PER_RADIUS:
                    res.scalars.update({f"{lab}/{key}/{eps_label(e)}": y for e, y in zip(eps, values)})
            res.plots.append(Plot(
                f"robustness_bound_vs_eps_{lab}", f"Loss bound vs empirical adversarial loss ({lab})",
                f"input-space epsilon ({self.attack.norm}, pixel units)", "logistic loss",
                [Series("bound (spectral)", eps, table[f"{lab}/bound_spectral"], "r--"),
                 Series("bound (data-dependent)", eps, table[f"{lab}/bound_data"], "m-."),
                 Series("empirical adversarial loss", eps, table[f"{lab}/adv_loss"], "b-"),
                 Series("clean loss", eps, table[f"{lab}/clean_loss"], "k:")]))
        marks = [e for e, v in zip(eps, ref.vacuous) if v]
        res.plots.append(Plot(
            "robustness_certified_vs_eps",
            "Certified fraction vs eps" + (f" (vacuous: {', '.join(f'{e:g}' for e in marks)})" if marks else ""),
            f"input-space epsilon ({self.attack.norm}, pixel units)", "fraction of test points",
            [Series("raw-input Bayes classifier (reference)", list(dense.eps), list(dense.certified), "k-"),
             Series("best any classifier can reach", list(dense.eps), list(dense.optimal), "k--"),
             Series(f"vacuous below {VACUOUS_BELOW:g}", [0.0, max(eps)], [VACUOUS_BELOW] * 2, "r:")]
            + [Series(f"criterion (ii) ({lab})", eps, table[f"{lab}/criterion"], "-s") for lab in labels]
            + [Series(f"robust accuracy, attacked ({lab})", eps, table[f"{lab}/robust_accuracy"], ":^")
               for lab in labels]))
        res.tables["per_eps"] = table
        return res
