"""Downstream truth on a real labelled dataset: what every label-free score here promises to predict.

On the job's ``dataset`` (features from the shared embedding pass):
- a softmax probe on the train features (``probes/softmax.py``: full batch, L-BFGS in float32 then float64, its
  L2 penalty chosen on a held-out part of the train split), and its test **accuracy**; every fit's iterations
  and seconds per precision, and the largest gradient entry where each stopped, in the ``probe_fits`` table;
  ``probe_at_max_iter`` is 1 when the refit (the head) stopped at ``max_iter`` short of ``tol`` (a warning says so),
  ``probe_search_at_max_iter`` the share of the search's fits that did (they only rank penalties);
- **robust accuracy** under an end-to-end PGD attack on the probe's cross-entropy through transform, encoder
  and probe, for every radius of the ``attack`` group, in the dataset's pixel units ([0, 1], box-clipped), on
  the first ``n_points`` test images. Radii are taken in increasing order and a point broken at one radius
  counts as broken at every larger one (the balls are nested: what the smaller attack found lies in the larger
  ball), so the curve never rises and never exceeds the clean accuracy of the attacked points;
- the **representation-robustness bound** of Nern et al. 2023 (spec: robustness_bound.md) of that head on the
  real task, multi-class (``multiclass_bound``): with ``Delta_f`` estimated per point from below as the larger
  of a label-free PGD on ``||f(x') - f(x)||`` and the shift the end-to-end attack reached (also carried over
  from smaller radii),
  - spectral: ``CE(g(x), y) + sqrt(2) ||W||_2 Delta_f`` (cross-entropy is sqrt(2)-Lipschitz in the logits);
  - data-dependent (logged as ``bound``): ``CE(g(x), y) + max_j ||w_y - w_j||_2 Delta_f``, the convexity form
    ``||w_y - W^T p(x')||_2 ||f(x') - f(x)||_2`` at its worst over the simplex (a vertex);
  - criterion (ii): the fraction with ``(w_y - w_j) f(x) + b_y - b_j > ||w_y - w_j||_2 Delta_f`` for all j != y.
  Since the estimate covers the attack's own shift, the bound is never below the attack's adversarial loss, and
  criterion (ii) can never certify a point the attack broke: it cannot fail. So it is also computed in the
  paper's own form, ``criterion_label_free``: Delta_f from the label-free PGD alone (carried over from smaller
  radii), with ``violations_label_free`` the points it certifies that the end-to-end attack broke (counted, not
  a fraction): any violation shows the label-free estimate of Delta_f fell short of the real shift.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from synbench.attacks import PGD
from synbench.data import GaussianMixture, Split
from synbench.data.mixture import derive_seed
from synbench.encoders import autocast
from synbench.metrics.base import MetricInputs, MetricResult, Plot, Series
from synbench.probes.softmax import SoftmaxHead, SoftmaxProbe
from synbench.progress import bar

PIXEL_BOX = (0.0, 1.0)  # the dataset's pixel units
log = logging.getLogger(__name__)


def multiclass_bound(f: torch.Tensor, y: torch.Tensor, head: SoftmaxHead, delta: torch.Tensor) -> dict:
    """Per-point clean loss, both loss bounds and criterion (ii) of a softmax head at vulnerability ``delta``."""
    logits = head.logits(f)
    clean = F.cross_entropy(logits, y, reduction="none")
    w, b = head.weight, head.bias
    gaps = torch.cdist(w, w)  # [K, K]: ||w_i - w_j||_2
    to_y = gaps[y]  # [n, K]
    delta = delta.to(logits.dtype)
    margins = logits.gather(1, y[:, None]) - logits  # (w_y - w_j) f + b_y - b_j
    others = torch.ones_like(margins, dtype=torch.bool).scatter_(1, y[:, None], False)
    certified = ((margins > to_y * delta[:, None]) | ~others).all(1)
    return {"clean_loss": clean,
            "bound_spectral": clean + math.sqrt(2) * torch.linalg.matrix_norm(w, ord=2) * delta,
            "bound_data": clean + to_y.max(1).values * delta,
            "certified": certified.to(logits.dtype)}


def eps_label(eps: float) -> str:
    return f"eps_{eps:g}"


class Downstream:
    name = "downstream"
    uses_mixture = False
    uses_dataset = True
    needs_labels = True  # its truth is the dataset's labels

    def __init__(self, probe: SoftmaxProbe, attack: PGD, n_points: int | None):
        if n_points is not None and int(n_points) <= 0:
            raise ValueError(f"metrics.downstream.n_points={n_points!r} must be a positive integer or null (every "
                             f"test image)")
        self.probe, self.attack = probe, attack
        self.n_points = None if n_points is None else int(n_points)

    def check(self, scales: list[float], mixture: GaussianMixture) -> None:
        pass

    def compute(self, inputs: MetricInputs) -> MetricResult:
        feats = inputs.labelled
        data = feats.data
        head = self.probe.fit(feats.z[Split.train], feats.y[Split.train], data.num_classes, inputs.seed)
        last = {s.penalty: s for s in head.stages if s.fit == "search"}  # each search fit's final stage
        search_short = sum(s.at_max_iter for s in last.values()) / max(1, len(last))
        res = MetricResult(self.name)
        res.scalars.update(accuracy=head.accuracy(feats.z[Split.test], feats.y[Split.test]),
                           train_accuracy=head.accuracy(feats.z[Split.train], feats.y[Split.train]),
                           val_accuracy=head.val_accuracy[head.penalty], penalty=head.penalty,
                           num_classes=data.num_classes, n_train=data.count(Split.train),
                           n_test=data.count(Split.test),
                           w_spectral_norm=float(torch.linalg.matrix_norm(head.weight, ord=2)),
                           probe_at_max_iter=float(head.at_max_iter), probe_search_at_max_iter=search_short)
        if head.at_max_iter:
            log.warning("downstream: the probe's refit stopped at metrics.downstream.probe.max_iter=%d, its largest "
                        "gradient entry %.2g above tol=%g (scalar downstream/probe_at_max_iter): its accuracy is a "
                        "nearly converged head's; raise max_iter to converge it", self.probe.max_iter,
                        head.stages[-1].grad, self.probe.tol)
        per_eps = self._attack(inputs, head)
        eps = per_eps.pop("eps")
        res.scalars.update(n_attacked=per_eps.pop("n"), clean_accuracy_attacked=per_eps.pop("clean_accuracy"),
                           clean_loss=per_eps["clean_loss"][0])
        for key, values in per_eps.items():
            if key != "clean_loss":
                for e, v in zip(eps, values):
                    res.scalars[f"{key}/{eps_label(e)}"] = v
        res.headline = ("accuracy", f"robust_accuracy/{eps_label(eps[-1])}")
        res.tables["per_eps"] = {"eps": eps, **per_eps}
        res.tables["probe"] = {"penalty": list(head.val_accuracy), "val_accuracy": list(head.val_accuracy.values()),
                               "chosen": head.penalty, "classes": list(data.classes)}
        res.tables["probe_fits"] = {key: [getattr(s, key) for s in head.stages]
                                    for key in ("fit", "penalty", "dtype", "iterations", "evaluations", "seconds",
                                                "grad", "reached_tol", "at_max_iter", "max_iter")}
        unit = f"input-space epsilon ({self.attack.norm}, dataset pixel units)"
        res.plots += [
            Plot("downstream_robust_accuracy_vs_eps", f"Downstream ({data.name}): robust accuracy", unit, "accuracy",
                 [Series("robust accuracy (PGD)", eps, per_eps["robust_accuracy"]),
                  Series("certified (criterion ii)", eps, per_eps["criterion"], "--")]),
            Plot("downstream_bound_vs_eps", f"Downstream ({data.name}): loss bound vs adversarial loss", unit,
                 "cross-entropy",
                 [Series("bound (data-dependent)", eps, per_eps["bound"], "m-."),
                  Series("bound (spectral)", eps, per_eps["bound_spectral"], "r--"),
                  Series("adversarial loss (PGD)", eps, per_eps["adv_loss"], "b-"),
                  Series("clean loss", eps, per_eps["clean_loss"], "k:")]),
            Plot("downstream_probe_penalty", f"Downstream ({data.name}): held-out accuracy per L2 penalty",
                 "log10 penalty", "validation accuracy",
                 [Series("validation", [math.log10(p) if p > 0 else -12.0 for p in head.val_accuracy],
                         list(head.val_accuracy.values()), "o-")])]
        return res

    def _attack(self, inputs: MetricInputs, head: SoftmaxHead) -> dict:
        """Per radius (increasing): robust accuracy, losses, bounds, criterion and Delta_f over the attacked
        points; broken points and Delta_f estimates carry over to larger radii."""
        feats, encoder = inputs.labelled, inputs.encoder.requires_grad_(False)
        data, transform = feats.data, feats.transform
        device = feats.z[Split.test].device
        dtype = inputs.precision.autocast_dtype(device)
        n = data.count(Split.test) if self.n_points is None else min(self.n_points, data.count(Split.test))
        size = self.attack.batch_size
        eps = sorted(self.attack.eps)
        robust = torch.ones(n, dtype=torch.bool, device=device)
        delta = torch.zeros(n, dtype=torch.float32, device=device)
        free = torch.zeros(n, dtype=torch.float32, device=device)  # Delta_f of the label-free attack alone
        out = {k: [] for k in ("robust_accuracy", "adv_loss", "bound", "bound_spectral", "criterion", "delta_f_mean",
                               "clean_loss", "criterion_label_free", "violations_label_free")}
        clean_correct = torch.zeros(n, dtype=torch.bool, device=device)
        for e in bar(eps, f"downstream attacks ({data.name})", "eps", inputs.progress):
            rows = {k: [] for k in ("adv_loss", "bound_data", "bound_spectral", "certified", "clean_loss",
                                    "certified_free")}
            for bi, start in enumerate(range(0, n, size)):
                stop = min(start + size, n)
                x, y = data.take(Split.test, slice(start, stop), device)
                gen = torch.Generator(device=device).manual_seed(derive_seed("downstream-attack", inputs.seed, e, bi))
                with torch.no_grad(), autocast(device, dtype):
                    f_clean = encoder(transform(x)).float()
                _, shift = self.attack.maximise(lambda xa: (encoder(transform(xa)).float() - f_clean).norm(dim=1),
                                                x, e, gen, PIXEL_BOX, dtype)
                x_adv, _ = self.attack.maximise(
                    lambda xa: F.cross_entropy(head.logits(encoder(transform(xa)).float()), y, reduction="none"),
                    x, e, gen, PIXEL_BOX, dtype)
                with torch.no_grad(), autocast(device, dtype):
                    f_adv = encoder(transform(x_adv)).float()
                adv_logits = head.logits(f_adv)
                reached = (f_adv - f_clean).norm(dim=1)
                delta[start:stop] = torch.maximum(delta[start:stop], torch.maximum(shift.float(), reached))
                free[start:stop] = torch.maximum(free[start:stop], shift.float())
                clean_correct[start:stop] = head.predict(f_clean) == y
                robust[start:stop] &= clean_correct[start:stop] & (adv_logits.argmax(1) == y)
                bound = multiclass_bound(f_clean, y, head, delta[start:stop])
                rows["adv_loss"].append(F.cross_entropy(adv_logits, y, reduction="none"))
                for key in ("bound_data", "bound_spectral", "certified", "clean_loss"):
                    rows[key].append(bound[key])
                rows["certified_free"].append(multiclass_bound(f_clean, y, head, free[start:stop])["certified"])
            cat = {k: torch.cat(v) for k, v in rows.items()}
            certified_free = cat["certified_free"].bool()
            out["criterion_label_free"].append(float(certified_free.double().mean()))
            # certified by the label-free Delta_f, yet broken by the end-to-end attack: the check that can fail
            out["violations_label_free"].append(float((certified_free & ~robust).sum()))
            out["robust_accuracy"].append(float(robust.double().mean()))
            out["adv_loss"].append(float(cat["adv_loss"].mean()))
            out["bound"].append(float(cat["bound_data"].mean()))
            out["bound_spectral"].append(float(cat["bound_spectral"].mean()))
            out["criterion"].append(float(cat["certified"].mean()))
            out["clean_loss"].append(float(cat["clean_loss"].mean()))
            out["delta_f_mean"].append(float(delta.double().mean()))
        return {"eps": eps, "n": n, "clean_accuracy": float(clean_correct.double().mean()), **out}
