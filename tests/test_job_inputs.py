"""The job's data path as a hostile user meets it: changed data at the same path are never a stale FINISHED
result, refused data leave no store and no folder, a bad input in a sweep ends the sweep with one line, and a
run records the data it read as MLflow dataset inputs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.data import Split
from synbench.data.readers import read_npz
from tests.conftest import SMALL

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ["metrics=[downstream]", "metrics.downstream.probe.penalties=[0.01]", "attack.eps=[0.01]",
              "attack.steps=2", "attack.restarts=1"]


def write_npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (48, 8, 8), dtype=np.uint8), y=np.arange(48) % 3)
    return path


def synbench(tmp_path, *args, flags=()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "synbench", *flags, f"paths.outputs={tmp_path}", *SMALL, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_changed_data_at_the_same_path_re_run_and_unchanged_data_skip(cfg_factory, tmp_path):
    data = write_npz(tmp_path / "data.npz", seed=0)
    cfg = cfg_factory("resume=true", "tracking.experiment=stale-data", "dataset=npz", f"dataset.path={data}",
                      *DOWNSTREAM)
    first = app.run(cfg, tmp_path / "a")
    assert "reused_run_id" not in first
    assert app.run(cfg, tmp_path / "b")["reused_run_id"] == first["run_id"]  # the same data: skipped
    write_npz(data, seed=1)  # other images, same path, same command
    second = app.run(cfg, tmp_path / "c")
    assert "reused_run_id" not in second and second["config_hash"] != first["config_hash"]
    assert second["dataset"]["digest"] != first["dataset"]["digest"]
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(second["run_id"])
    assert run.info.status == "FINISHED"
    # the data it read, as MLflow dataset inputs: one per split, by content digest, with its size and source
    ds = read_npz("data", str(data), test_fraction=0.2, split_seed=0)
    inputs = {i.tags[0].value if i.tags[0].key == "mlflow.data.context" else i.tags[1].value: i
              for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "test"}
    for split in Split:
        got = inputs[split.value]
        assert got.dataset.name == "data" and got.dataset.digest == ds.split_digest[split]
        assert str(data) in got.dataset.source and {t.key: t.value for t in got.tags}["images"] == str(ds.count(split))
    write_npz(data, seed=0)  # back to the first data: the first run stands for it again
    assert app.run(cfg, tmp_path / "d")["reused_run_id"] == first["run_id"]


def test_refused_data_leave_no_store_and_no_folder(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((10, 4, 4), dtype=np.uint8), y=np.arange(9) % 2)
    out = tmp_path / "out"
    proc = synbench(out, "dataset=npz", f"dataset.path={bad}", *DOWNSTREAM)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"synbench: error: dataset.path={str(bad)!r}: 10 images but 9 " \
                                                   "labels; every image needs exactly one label"
    assert not (out / "mlflow").exists()  # the data were checked before the store was touched
    assert not list((out / "runs").glob("*/*")) if (out / "runs").exists() else True  # nor a job folder left


def test_a_bad_input_in_a_sweep_ends_it_with_one_line(tmp_path):
    """The basic launcher runs jobs in the sweep's process: the first bad input ends the sweep there, with one
    line (no Hydra traceback), and the parent run is FAILED with that line, not "the sweep did not complete"."""
    proc = synbench(tmp_path, "epsilon.grid=[0.0,1.2]", "seed=0,1", flags=["--multirun"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("synbench: error: job #0 (") and "seed=0):" in last
    assert "epsilon value 1.2 is outside [0, 1)" in last
    assert last.endswith("the sweep stops here (re-run it once fixed: finished jobs are skipped)")
    assert "#1 :" not in proc.stdout + proc.stderr  # job #1 was never attempted
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("synbench").experiment_id])
    [parent] = runs  # no job run: the job refused its input before any run existed
    assert parent.data.tags["synbench.kind"] == "sweep" and parent.info.status == "FAILED"
    assert parent.data.tags["synbench.error"] == last.removesuffix("; the sweep stops here (re-run it once fixed: "
                                                                   "finished jobs are skipped)")
