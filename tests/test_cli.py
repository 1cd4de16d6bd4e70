"""The real command line: a 2-job multirun nests under one parent run; bad input is one line, exit 1."""

import json
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


def readme_example(marker: str) -> str:
    """The fenced block right after ``<!-- custom-example:<marker> -->`` in docs/encoders.md ("Your own model"),
    as written."""
    text = (ROOT / "docs" / "encoders.md").read_text()
    after = text.split(f"<!-- custom-example:{marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_readme_custom_module_example_runs_as_written(tmp_path):
    (tmp_path / "my_encoders.py").write_text(readme_example("file my_encoders.py"))
    command = readme_example("command")
    assert command.startswith("PYTHONPATH=. python -m synbench model=custom")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SynBench job finished" in proc.stdout and "synbench/score:" in proc.stdout
    [results] = list(tmp_path.glob("outputs/runs/*/*/results.json"))
    job = json.loads(results.read_text())["job"]
    assert job["num_features"] == 16 and job["encoder"]["input_shape"] == [3, 64, 64]
    assert job["encoder"]["module"] == {"_target_": "my_encoders.SmallConvNet", "width": 16}
