"""The real command line: a 2-job multirun nests under one parent run; bad input is one line, exit 1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SMALL

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def synbench(tmp_path, *args, flags=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "synbench", *flags, f"paths.outputs={tmp_path}", *SMALL, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_multirun_makes_one_parent_and_a_child_per_job(tmp_path):
    proc = synbench(tmp_path, "seed=0,1", flags=["--multirun"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    exp = client.get_experiment_by_name("synbench")
    all_runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in all_runs if r.data.tags.get("synbench.kind") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(all_runs) == 3 and len(children) == 2
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    assert len({c.data.tags["synbench.config_hash"] for c in children}) == 2
    assert all("synbench/score" in c.data.metrics for c in children)
    # each job's Hydra folder holds its results, and its resolved config went to MLflow
    assert len(list(tmp_path.glob("sweeps/*/*/*/results.json"))) == 2
    hydra_files = {a.path for a in client.list_artifacts(children[0].info.run_id, "hydra")}
    assert "hydra/config.yaml" in hydra_files


def test_bad_input_is_one_line_and_no_run(tmp_path):
    proc = synbench(tmp_path, "epsilon.grid=[0.0,1.2]")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("synbench: error: epsilon value 1.2 is outside [0, 1)")
    assert not (tmp_path / "mlflow" / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{tmp_path}/mlflow/mlflow.db").search_runs(["0", "1"])
