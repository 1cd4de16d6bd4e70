"""Linear probes fitted on representations: ``fit(z, y) -> LinearProbe`` (one or more variants)."""

from synbench.probes.base import LinearProbe, accuracy_of, check_norm, dual_norm
from synbench.probes.robust_bayes import RobustBayesProbe, check_epsilons, robust_root
from synbench.probes.robust_logistic import RobustLogisticProbe, robust_logistic_loss

__all__ = ["LinearProbe", "RobustBayesProbe", "RobustLogisticProbe", "accuracy_of", "check_epsilons", "check_norm", "dual_norm",
           "robust_logistic_loss", "robust_root"]
