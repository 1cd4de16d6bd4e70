"""Linear probes fitted on representations; each returns a ``LinearProbe`` that scores margins."""

from synbench.probes.base import LinearProbe
from synbench.probes.robust_bayes import RobustBayesProbe, check_epsilons, robust_root

__all__ = ["LinearProbe", "RobustBayesProbe", "check_epsilons", "robust_root"]
