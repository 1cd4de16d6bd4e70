"""The epsilon-robust Bayes linear probe of SynBench (spec section 3), with the exact secular-equation root.

In the eigenbasis of the pooled within-class covariance ``S = F D F^T`` (eigenvalues > ``eig_floor`` kept) the
probe solves ``min_v (u - v)^T D^-1 (u - v)  s.t.  ||v|| <= eps ||u||`` with ``u`` the half mean difference.
The minimiser is ``v(lam) = (I + lam D)^-1 u`` with ``lam >= 0`` the root of ``||v(lam)|| = eps ||u||``, a 1-D
monotone equation solved by a safeguarded Newton iteration on ``1/||v(lam)||`` (concave and increasing, so
Newton from the left never overshoots) inside a shrinking bracket, to machine precision. All algebra is
float64 on the embeddings' device; every eps of the grid is solved at once.
"""

from __future__ import annotations

import torch

from synbench.probes.base import LinearProbe, label


def check_epsilons(eps) -> list[float]:
    values = [float(e) for e in eps]
    if not values:
        raise ValueError("epsilon.grid is empty; give at least one eps in [0, 1), e.g. [0.0]")
    for e in values:
        if not 0.0 <= e < 1.0:
            raise ValueError(f"epsilon value {e!r} is outside [0, 1): the robust radius is relative to ||u||")
    return values


def robust_root(u: torch.Tensor, d: torch.Tensor, eps: torch.Tensor, max_iter: int = 200) -> torch.Tensor:
    """``lam`` [E] with ``||(I + lam diag(d))^-1 u|| = eps ||u||`` (``inf`` for eps = 0), for d > 0.

    Bracket: ``lam`` in [0, (1/eps - 1) / min(d)] since ``||v(lam)|| <= ||u|| / (1 + lam min d)``.
    """
    u2 = (u * u)[None, :]
    d = d[None, :]
    target = eps * torch.linalg.vector_norm(u)  # [E]
    active = eps > 0
    safe_eps = torch.where(active, eps, torch.ones_like(eps))
    lo = torch.zeros_like(eps)
    hi = torch.where(active, (1.0 / safe_eps - 1.0) / d.min(), torch.zeros_like(eps))
    lam = lo.clone()
    for _ in range(max_iter):
        a = 1.0 + lam[:, None] * d
        norm = torch.sqrt((u2 / a**2).sum(1))  # ||v(lam)||
        slope = (u2 * d / a**3).sum(1) / norm**3  # d/dlam of 1/||v||
        phi = 1.0 / norm - 1.0 / torch.where(active, target, torch.ones_like(target))
        lo = torch.where(phi < 0, lam, lo)
        hi = torch.where(phi >= 0, lam, hi)
        newton = lam - phi / slope
        inside = (newton > lo) & (newton < hi)
        new = torch.where(inside, newton, 0.5 * (lo + hi))
        new = torch.where(active, new, torch.zeros_like(new))
        if bool(((new - lam).abs() <= 1e-15 * new.abs().clamp_min(1e-300)).all()):
            lam = new
            break
        lam = new
    return torch.where(active, lam, torch.full_like(lam, float("inf")))


def covariance_eigs(resid: torch.Tensor, dof: int, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``> floor`` of ``S = resid^T resid / dof`` and their eigenvectors (columns).

    With fewer rows than features (a wide encoder on a few hundred samples) ``S`` has rank ``< n`` and its
    other eigenvalues are 0, below any floor; the kept pairs come from the ``n x n`` Gram matrix instead:
    ``G a = l a`` gives ``S``'s eigenvalue ``l / dof`` with eigenvector ``resid^T a / sqrt(l)``. Same pairs,
    at ``O(n^2 D)`` instead of the ``O(D^3)`` of a 4,096-wide covariance."""
    n, dim = resid.shape
    if n >= dim:
        evals, evecs = torch.linalg.eigh(resid.T @ resid / dof)
        keep = evals > floor
        return evals[keep], evecs[:, keep]
    lam, a = torch.linalg.eigh(resid @ resid.T)
    keep = lam / dof > floor
    lam, a = lam[keep], a[:, keep]
    return lam / dof, (resid.T @ a) / lam.sqrt()


class RobustBayesProbe:
    """Fit the eps-robust Bayes probe for a whole eps grid from one eigendecomposition."""

    norm = "l2"

    def __init__(self, eig_floor: float, eps):
        if not eig_floor > 0:
            raise ValueError(f"probe.eig_floor={eig_floor!r} must be > 0")
        self.eig_floor = float(eig_floor)
        self.eps = check_epsilons(eps)

    def fit(self, z: torch.Tensor, y: torch.Tensor) -> LinearProbe:
        eps_t = torch.as_tensor(self.eps, dtype=torch.float64, device=z.device)
        labels = [label("eps", e) for e in self.eps]
        z = z.to(torch.float64)
        ones, zeros = z[y == 1], z[y == 0]
        m1, m0 = ones.mean(0), zeros.mean(0)
        center = (m1 + m0) / 2
        if len(ones) < 2 or len(zeros) < 2:
            return _degenerate(center, labels)
        resid = torch.cat([ones - m1, zeros - m0])
        d, basis = covariance_eigs(resid, len(z) - 2, self.eig_floor)
        if not len(d):
            return _degenerate(center, labels)
        u = basis.T @ (m1 - m0) / 2
        u_norm = torch.linalg.vector_norm(u)
        if not bool(u_norm > 0):
            return _degenerate(center, labels)
        lam = robust_root(u, d, eps_t)
        v = torch.where(torch.isinf(lam)[:, None], torch.zeros_like(u)[None, :],
                        u[None, :] / (1.0 + torch.nan_to_num(lam, posinf=0.0)[:, None] * d[None, :]))
        w = (u[None, :] - v) / d[None, :]  # [E, K] in the eigenbasis
        return LinearProbe(weight=w @ basis.T, center=center, unit=(w @ u).abs(), radius=eps_t * u_norm,
                           norm=self.norm, labels=labels, half_gap=u_norm)


def _degenerate(center: torch.Tensor, labels: list[str]) -> LinearProbe:
    """No usable direction: every margin is 0 (a tie), which metrics score as chance."""
    zeros = torch.zeros(len(labels), dtype=center.dtype, device=center.device)
    return LinearProbe(weight=torch.zeros((len(labels), center.numel()), dtype=center.dtype, device=center.device),
                       center=center, unit=zeros, radius=zeros, norm="l2", labels=labels,
                       half_gap=torch.zeros((), dtype=center.dtype, device=center.device))
