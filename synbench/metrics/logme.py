"""LogME (You, Liu, Wang, Long, ICML 2021, arXiv 2102.11005): the log marginal likelihood of the labels under a
Bayesian linear model on the features, a cheap *labelled* yardstick beside the label-free scores.

With F the [n, D] train features and, for each class k, the one-hot target column t (t_i = 1 if y_i = k):
``t = F w + noise``, prior ``w ~ N(0, alpha^-1 I)``, noise precision ``beta``. The log evidence is

    L(alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log(2 pi) - beta/2 ||F m - t||^2 - alpha/2 m^T m
                     - 1/2 log det A,    A = alpha I + beta F^T F,    m = beta A^-1 F^T t,

i.e. ``log N(t; 0, beta^-1 I + alpha^-1 F F^T)``. alpha and beta maximise it by MacKay's fixed point: with
``sigma_i^2`` the eigenvalues of F^T F, ``gamma = sum_i beta sigma_i^2 / (alpha + beta sigma_i^2)``,
``alpha <- gamma / m^T m``, ``beta <- (n - gamma) / ||F m - t||^2``, from alpha = beta = 1 (the paper's start)
until both change by less than ``tol`` relatively (the paper: 1e-3; here 1e-6 by default). LogME is the mean
over the classes present of ``L(alpha_k, beta_k) / n``. The features are used as they are (no centring, no
bias term: the paper's model).

Everything runs in float64 from ONE thin SVD ``F = U S V^T`` shared by all classes: with ``p = U_r^T t`` over
the r = rank(F) directions whose singular value exceeds ``s_max max(n, D) eps`` (numpy's matrix_rank rule),

    m^T m        = sum_i (beta s_i p_i / d_i)^2,                  d_i = alpha + beta s_i^2,
    ||F m - t||^2 = sum_i (alpha p_i / d_i)^2 + ||t - U_r p||^2,
    log det A    = sum_i log d_i + (D - r) log alpha,
    n - gamma    = (n - r) + sum_i alpha / d_i   (no cancellation when beta is large).

The D - r null directions of F (all of them beyond n when n < D) have eigenvalue 0 in F^T F: they add
``D/2 log alpha`` in the prior term and ``log alpha`` each to log det A, nothing else.

When the evidence has no interior maximum (a target F fits exactly, so beta runs off; a target orthogonal to
every feature, so alpha does), alpha and beta are kept within [1e-100, 1e100]; a fit that ends there, or that
uses up ``max_iter``, is reported as not converged (the table's ``converged``) and warned about.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from synbench.data import GaussianMixture, Split
from synbench.metrics.base import MetricInputs, MetricResult

log = logging.getLogger(__name__)

BOUNDS = (1e-100, 1e100)  # alpha and beta are kept in here (the evidence may have no interior maximum)
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class _Spectrum:
    """What every target's evidence needs of F: the rank-r left singular vectors and the squared singular values."""

    u: torch.Tensor  # [n, r], float64, on the features' device
    s2: np.ndarray  # [r]
    n: int
    d: int


@dataclass
class Fit:
    alpha: float
    beta: float
    evidence: float  # L(alpha, beta) / n
    iterations: int
    converged: bool


def _f64(x) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(torch.float64)


def _spectrum(features) -> _Spectrum:
    f = _f64(features)
    if f.ndim != 2 or min(f.shape) < 1:
        raise ValueError(f"features must be a non-empty [n, D] matrix; got shape {tuple(f.shape)}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features hold non-finite values; LogME needs finite features")
    n, d = f.shape
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    floor = float(s[0]) * max(n, d) * np.finfo(np.float64).eps if len(s) else 0.0
    r = int((s > floor).sum())
    return _Spectrum(u[:, :r], (s[:r] ** 2).cpu().numpy(), n, d)


def _project(spec: _Spectrum, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``p = U_r^T t`` [r, K] and ``||t - U_r p||^2`` [K] for the target columns [n, K]."""
    targets = targets.to(spec.u.device, torch.float64)
    p = spec.u.T @ targets
    perp = ((targets - spec.u @ p) ** 2).sum(0)
    return p.cpu().numpy(), perp.cpu().numpy()


def _terms(s2: np.ndarray, p: np.ndarray, alpha: float, beta: float) -> tuple[np.ndarray, float, float]:
    d = alpha + beta * s2
    mtm = float(np.sum((beta * np.sqrt(s2) * p / d) ** 2))
    res_in = float(np.sum((alpha * p / d) ** 2))
    return d, mtm, res_in


def _evidence(spec: _Spectrum, p: np.ndarray, perp: float, alpha: float, beta: float) -> float:
    """L(alpha, beta) / n for one target from its projection."""
    n, dim = spec.n, spec.d
    d, mtm, res_in = _terms(spec.s2, p, alpha, beta)
    res = res_in + perp
    logdet = float(np.sum(np.log(d))) + (dim - len(spec.s2)) * math.log(alpha)
    ev = (0.5 * n * math.log(beta) + 0.5 * dim * math.log(alpha) - 0.5 * n * LOG_2PI - 0.5 * beta * res
          - 0.5 * alpha * mtm - 0.5 * logdet)
    return ev / n


def _fit(spec: _Spectrum, p: np.ndarray, perp: float, tol: float, max_iter: int) -> Fit:
    """MacKay's fixed point for one target from its projection."""
    lo, hi = BOUNDS
    alpha = beta = 1.0
    r = len(spec.s2)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        d, mtm, res_in = _terms(spec.s2, p, alpha, beta)
        gamma = float(np.sum(beta * spec.s2 / d))
        rest = (spec.n - r) + float(np.sum(alpha / d))  # n - gamma
        res = res_in + perp
        new_alpha = min(max(gamma / mtm if mtm > 0 else hi, lo), hi)
        new_beta = min(max(rest / res if res > 0 else hi, lo), hi)
        change = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if change < tol:
            converged = not any(v in (lo, hi) for v in (alpha, beta))
            break
    return Fit(alpha, beta, _evidence(spec, p, perp, alpha, beta), it, converged)


def _target(target, n: int) -> torch.Tensor:
    t = _f64(target).reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"target has {t.shape[0]} values for {n} feature rows")
    return t[:, None]


def _check_fit_args(tol: float, max_iter: int) -> None:
    if not (float(tol) > 0 and int(max_iter) >= 1):
        raise ValueError(f"tol={tol!r} must be > 0 and max_iter={max_iter!r} >= 1")


def log_evidence(features, target, alpha: float, beta: float) -> float:
    """``L(alpha, beta) / n`` for one target column [n] at the given alpha, beta (no fitting)."""
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"alpha={alpha!r} and beta={beta!r} must be > 0")
    spec = _spectrum(features)
    p, perp = _project(spec, _target(target, spec.n))
    return _evidence(spec, p[:, 0], float(perp[0]), float(alpha), float(beta))


def fit_evidence(features, target, tol: float = 1e-6, max_iter: int = 1000) -> tuple[float, float, float]:
    """(alpha, beta, L/n) at MacKay's fixed point for one target column [n]."""
    _check_fit_args(tol, max_iter)
    spec = _spectrum(features)
    p, perp = _project(spec, _target(target, spec.n))
    fit = _fit(spec, p[:, 0], float(perp[0]), float(tol), int(max_iter))
    return fit.alpha, fit.beta, fit.evidence


def logme_fits(features, labels, tol: float = 1e-6, max_iter: int = 1000) -> tuple[dict[int, Fit], int]:
    """Per class present (sorted): the fit of its one-hot column, all from one SVD of the features; and rank(F)."""
    _check_fit_args(tol, max_iter)
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).reshape(-1)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers; got {y.dtype}")
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError(f"LogME needs at least 2 classes; the labels hold {len(classes)} "
                         f"({', '.join(str(int(c)) for c in classes) or 'none'})")
    spec = _spectrum(features)
    if len(y) != spec.n:
        raise ValueError(f"{len(y)} labels for {spec.n} feature rows")
    onehot = (y[:, None] == classes[None, :]).to(torch.float64)  # [n, K]
    p, perp = _project(spec, onehot)
    return ({int(c): _fit(spec, p[:, k], float(perp[k]), float(tol), int(max_iter)) for k, c in enumerate(classes)},
            len(spec.s2))


def logme(features, labels, tol: float = 1e-6, max_iter: int = 1000) -> float:
    """LogME: the mean over the classes present of the fitted ``L / n`` of their one-hot columns."""
    fits, _ = logme_fits(features, labels, tol, max_iter)
    return float(np.mean([f.evidence for f in fits.values()]))


class LogME:
    """LogME of the job's dataset train features and labels (a yardstick that reads labels, beside the
    label-free scores)."""

    name = "logme"
    uses_mixture = False
    uses_dataset = True
    needs_labels = True

    def __init__(self, tol: float, max_iter: int):
        if not (float(tol) > 0 and int(max_iter) >= 1):
            raise ValueError(f"metrics.logme.tol={tol!r} must be > 0 and metrics.logme.max_iter={max_iter!r} >= 1")
        self.tol, self.max_iter = float(tol), int(max_iter)

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        pass  # reads no mixture; the job checks the dataset (labels, >= 2 classes) before any heavy work

    def compute(self, inputs: MetricInputs) -> MetricResult:
        feats = inputs.labelled
        if feats is None:
            raise ValueError("metrics logme need a labelled dataset: add dataset=idx|npz|image_folder|hf "
                             "dataset.path=...")
        z, y = feats.z[Split.train], feats.y[Split.train]
        fits, rank = logme_fits(z, y, self.tol, self.max_iter)
        names = list(feats.data.classes)
        value = float(np.mean([f.evidence for f in fits.values()]))
        res = MetricResult(self.name, headline=("logme",))
        res.scalars.update(logme=value, num_classes=len(fits), n_train=int(z.shape[0]), width=int(z.shape[1]),
                           rank=rank, converged=float(np.mean([f.converged for f in fits.values()])))
        res.tables["per_class"] = {
            "class": list(fits), "name": [names[c] if 0 <= c < len(names) else str(c) for c in fits],
            "logme": [f.evidence for f in fits.values()], "alpha": [f.alpha for f in fits.values()],
            "beta": [f.beta for f in fits.values()], "iterations": [f.iterations for f in fits.values()],
            "converged": [f.converged for f in fits.values()], "tol": self.tol, "max_iter": self.max_iter}
        stuck = [names[c] if 0 <= c < len(names) else str(c) for c, f in fits.items() if not f.converged]
        if stuck:
            log.warning("logme: the evidence fit did not converge for class(es) %s (max_iter=%d reached, or alpha/"
                        "beta ran to a bound: no interior maximum); their L/n is at the last iterate",
                        ", ".join(stuck), self.max_iter)
        return res
