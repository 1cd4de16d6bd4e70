"""Results leave the job here: local files first (never lost), then MLflow. Nothing metric-specific."""

from synbench.tracking.local import write_local_results
from synbench.tracking.mlflow_run import MlflowTracker, TrackingError

__all__ = ["MlflowTracker", "TrackingError", "write_local_results"]
