"""Input-space attacks through a model, from pixel space (shared by the robustness bound and RMQM)."""

from synbench.attacks.pgd import PGD, ascend, project

__all__ = ["PGD", "ascend", "project"]
