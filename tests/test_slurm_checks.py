"""What the Slurm launcher checks so that a sweep Slurm can never start says so instead of waiting forever,
against fake ``scontrol`` / ``squeue`` / ``scancel`` / ``sbatch`` on PATH (no cluster needed): the request
against each partition's nodes before submitting (the line names the key and the largest value that fits, and
that value does fit), sbatch's refusal as one line, the pending reasons that never resolve (and those that do),
and the launcher's wait loop ending such a sweep, its jobs cancelled. ``tests/test_slurm.py`` does the same on a
real cluster."""

import logging
import os
import re
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hydra.core.plugins import Plugins  # noqa: E402

Plugins.instance()  # Hydra's plugin scan re-executes the hydra_plugins modules: let it run before they are imported
from synbench.launcher import SlurmLauncher, SweepFailed  # noqa: E402
from synbench import cluster as slurm_cluster  # noqa: E402  (`cluster` is a fixture here)
from synbench.runner import CONF_DIR
from synbench.tracking import slurm
from synbench.tracking.mlflow_run import PARENT_ENV

# a cluster of three partitions: cpu (the default), gpu (two unlike nodes, limits), debug (hidden)
PARTITIONS = """\
PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=YES MaxNodes=UNLIMITED MaxTime=1-00:00:00 MaxCPUsPerNode=UNLIMITED MaxMemPerNode=UNLIMITED Nodes=c[1-2] State=UP TotalNodes=2
PartitionName=gpu AllowGroups=ALL AllowAccounts=ml,vision AllowQos=ALL Default=NO MaxNodes=2 MaxTime=04:00:00 MaxCPUsPerNode=UNLIMITED MaxMemPerNode=UNLIMITED Nodes=g1,g2 State=UP TotalNodes=2
PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=normal Default=NO Hidden=YES MaxNodes=UNLIMITED MaxTime=30 Nodes=c1 State=UP TotalNodes=1
"""
NODES = """\
NodeName=c1 Arch=x86_64 CoresPerSocket=32 CPUAlloc=0 CPUEfctv=64 CPUTot=64 Gres=(null) RealMemory=256000 Partitions=cpu,debug State=IDLE OS=Linux 5.14.0 #1 SMP
NodeName=c2 Arch=x86_64 CoresPerSocket=16 CPUAlloc=0 CPUEfctv=32 CPUTot=32 Gres=(null) RealMemory=512000 Partitions=cpu State=MIXED OS=Linux 5.14.0 #1 SMP
NodeName=g1 Arch=x86_64 CoresPerSocket=16 CPUAlloc=0 CPUEfctv=30 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=191000 MemSpecLimit=1000 Partitions=gpu State=IDLE
NodeName=g2 Arch=x86_64 CoresPerSocket=8 CPUAlloc=0 CPUEfctv=16 CPUTot=16 Gres=gpu:v100:2,gpu:t4:1 RealMemory=96000 Partitions=gpu State=DOWN+DRAIN
"""
FITS = {"partition": None, "cpus_per_task": 8, "tasks_per_node": 1, "mem_gb": 32, "gpus_per_node": None,
        "gpus_per_task": None, "gres": None, "timeout_min": 120, "nodes": 1, "account": None, "qos": None}


def fake(bin_dir: Path, name: str, script: str) -> None:
    """A command ``name`` on PATH: a shell script that records its arguments in ``<name>.args``."""
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "$*" >> "{bin_dir}/{name}.args"\n{script}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def printing(text: str, rc: int = 0, stderr: str = "") -> str:
    return f"cat <<'EOF'\n{text}\nEOF\n" + (f"echo '{stderr}' >&2\n" if stderr else "") + f"exit {rc}"


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv(PARENT_ENV, raising=False)  # no MLflow here
    return tmp_path


@pytest.fixture
def cluster(bin_dir):
    fake(bin_dir, "scontrol", f"""case "$*" in
  *"show partition"*) {printing(PARTITIONS)} ;;
  *"show node"*) {printing(NODES)} ;;
esac""")
    return slurm_cluster.read_cluster()


def test_the_cluster_is_read_from_scontrol(cluster):
    assert sorted(cluster) == ["cpu", "debug", "gpu"]  # the hidden partition too (scontrol -a)
    cpu, gpu, debug = cluster["cpu"], cluster["gpu"], cluster["debug"]
    assert cpu.default and not gpu.default and cpu.max_time_min == 1440 and gpu.max_time_min == 240
    assert debug.max_time_min == 30 and gpu.max_nodes == 2 and cpu.max_nodes is None
    assert gpu.allow_accounts == {"ml", "vision"} and cpu.allow_accounts is None and debug.allow_qos == {"normal"}
    assert [(n.name, n.cpus, n.mem_mb) for n in gpu.nodes] == [("g1", 30, 190000), ("g2", 16, 96000)]
    assert gpu.nodes[0].gres == [("gpu", "a100", 4)]
    assert gpu.nodes[1].gres == [("gpu", "v100", 2), ("gpu", "t4", 1)]
    assert [n.name for n in debug.nodes] == ["c1"]


@pytest.mark.parametrize("request_, line", [
    ({"cpus_per_task": 65}, "hydra.launcher.cpus_per_task=65, but partition cpu's nodes have at most 64 CPUs "
                            "(at most cpus_per_task=64)"),
    ({"cpus_per_task": 16, "tasks_per_node": 5}, "hydra.launcher.cpus_per_task=16 x tasks_per_node=5, but partition "
                                                 "cpu's nodes have at most 64 CPUs (at most cpus_per_task=12)"),
    ({"cpus_per_task": 1, "tasks_per_node": 65}, "hydra.launcher.tasks_per_node=65, but partition cpu's nodes have "
                                                 "at most 64 CPUs (at most tasks_per_node=64 with cpus_per_task=1)"),
    ({"partition": "gpu", "cpus_per_task": 31}, "at most 30 CPUs (at most cpus_per_task=30)"),  # CPUEfctv
    ({"mem_gb": 501}, "hydra.launcher.mem_gb=501, but partition cpu's nodes have at most 512000 MB of memory "
                      "(at most mem_gb=500)"),
    ({"partition": "gpu", "mem_gb": 186}, "at most 190000 MB of memory (at most mem_gb=185)"),  # less MemSpecLimit
    ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1, but no node of partition cpu has a gpu (they have no "
                           "generic resource; drop it with hydra.launcher.gpus_per_node=null)"),
    ({"partition": "gpu", "gpus_per_node": 5}, "hydra.launcher.gpus_per_node=5, but partition gpu's nodes have at "
                                               "most 4 gpu (at most gpus_per_node=4)"),
    ({"partition": "gpu", "gpus_per_task": 2, "tasks_per_node": 4, "cpus_per_task": 1}, "(at most gpus_per_task=1)"),
    ({"partition": "gpu", "gres": "gpu:v100:3"}, "hydra.launcher.gres=gpu:v100:3, but partition gpu's nodes have "
                                                 "at most 2 gpu:v100 (at most gres=gpu:v100:2)"),
    ({"partition": "gpu", "gres": "gpu:5"}, "(at most gres=gpu:4)"),
    ({"partition": "gpu", "gres": "gpu:h100:1"}, "hydra.launcher.gres=gpu:h100:1, but no node of partition gpu has "
                                                 "a gpu:h100 (they have gpu:a100, gpu:t4, gpu:v100; drop it"),
    ({"partition": "gpu", "timeout_min": 241}, "hydra.launcher.timeout_min=241, but partition gpu's MaxTime is 240 "
                                               "minutes (at most timeout_min=240)"),
    ({"partition": "debug", "timeout_min": 31}, "partition debug's MaxTime is 30 minutes (at most timeout_min=30)"),
    ({"nodes": 3}, "hydra.launcher.nodes=3, but only 2 nodes of partition cpu can hold the job (at most nodes=2)"),
    ({"cpus_per_task": 48, "nodes": 2}, "only 1 node of partition cpu can hold the job (at most nodes=1)"),
    ({"partition": "gpu", "nodes": 3, "mem_gb": 1, "cpus_per_task": 1}, "(at most nodes=2)"),
    ({"partition": "gpu", "account": "physics"}, "hydra.launcher.account=physics, but partition gpu allows only ml, "
                                                 "vision"),
    ({"partition": "debug", "qos": "high", "timeout_min": 10}, "hydra.launcher.qos=high, but partition debug allows "
                                                               "only normal"),
    ({"partition": "gpus"}, "hydra.launcher.partition=gpus, but the cluster has no such partition (its partitions: "
                            "cpu, debug, gpu)"),
])
def test_a_request_no_node_can_hold_is_named_with_the_largest_value_that_fits(cluster, request_, line):
    params = {**FITS, **request_}
    why = slurm_cluster.misfit(params, cluster)
    assert why is not None and line in why, why
    fits = re.search(r"\(at most (\w+)=([^) ]+)", why)
    if fits:  # the value the line offers does fit (or moves the check on to another key)
        key, value = fits.groups()
        value = int(value) if value.isdigit() else value
        after = slurm_cluster.misfit({**params, key: value}, cluster)
        assert after is None or f"hydra.launcher.{key}=" not in after, after
        if isinstance(value, int):  # and one more does not
            assert f"hydra.launcher.{key}=" in (slurm_cluster.misfit({**params, key: value + 1}, cluster) or ""), key


@pytest.mark.parametrize("request_", [
    {}, {"cpus_per_task": 64, "mem_gb": 250}, {"cpus_per_task": 32, "mem_gb": 500}, {"nodes": 2},
    {"partition": "gpu", "account": "ml", "gpus_per_node": 4, "cpus_per_task": 30, "timeout_min": 240},
    {"partition": "gpu", "gres": "gpu:t4:1", "cpus_per_task": 16, "nodes": 1},
    {"partition": "gpu", "gpus_per_node": "a100:4", "cpus_per_task": 8},
    {"partition": "nope,gpu", "gres": "gpu:v100:2"},  # any partition of a list will do
    {"partition": "debug", "timeout_min": 30, "qos": "normal"},
])
def test_a_request_some_node_can_hold_passes(cluster, request_):
    assert slurm_cluster.misfit({**FITS, **request_}, cluster) is None


def test_every_part_fitting_some_node_is_not_enough(cluster):
    """20 CPUs and 100 GB fit g1 only, a v100 is on g2 only: no node holds the job."""
    why = slurm_cluster.misfit({**FITS, "partition": "gpu", "cpus_per_task": 20, "mem_gb": 100, "gres": "gpu:v100:1"}, cluster)
    assert why.startswith("hydra.launcher's request (20 CPUs, 102400 MB, gres=gpu:v100:1 per node) fits no single "
                          "node of partition gpu (g1: 30 CPUs, 190000 MB, gpu:a100:4; g2: 16 CPUs"), why


def test_no_partition_and_no_default(bin_dir):
    fake(bin_dir, "scontrol", f"""case "$*" in
  *"show partition"*) {printing(PARTITIONS.replace("Default=YES", "Default=NO"))} ;;
  *"show node"*) {printing(NODES)} ;;
esac""")
    why = slurm_cluster.misfit(FITS, slurm_cluster.read_cluster())
    assert why == "hydra.launcher.partition is not set and the cluster has no default partition (its partitions: " \
                  "cpu, debug, gpu)"


@pytest.mark.parametrize("text, minutes", [("UNLIMITED", None), ("infinite", None), ("30", 30), ("30:30", 30.5),
                                           ("04:00:00", 240), ("1-00:00:00", 1440), ("2-12", 3600),
                                           ("1-01:30", 1530)])
def test_slurm_times(text, minutes):
    assert slurm_cluster.slurm_minutes(text) == minutes


def test_gres_and_host_lists():
    assert slurm_cluster.parse_gres("gpu:a100:4(S:0-1),gpu:2,mps:100,shard") == [
        ("gpu", "a100", 4), ("gpu", None, 2), ("mps", None, 100), ("shard", None, 1)]
    assert slurm_cluster.parse_gres("gpu:a100") == [("gpu", "a100", 1)]
    assert slurm_cluster.parse_gres("(null)") == []
    assert slurm_cluster.expand_hostlist("a[01-02,5],b,c[7]") == ["a01", "a02", "a5", "b", "c7"]


# --- the cluster cannot be read: warn in one line, submit as before -----------------------------------------

def launcher(**changes) -> SlurmLauncher:
    """This launcher as conf/hydra/launcher/slurm.yaml makes it (composed), ``changes`` applied."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher)
    params.pop("_target_")
    return SlurmLauncher(**{**params, "submitit_folder": "/tmp/never-used/%j", **changes})


@pytest.mark.parametrize("script, why", [
    (None, "scontrol is not available"),
    (printing("", 1, "slurm_load_partitions: Unable to contact slurm controller (connect failure)"),
     "scontrol -a -o show partition failed: slurm_load_partitions: Unable to contact slurm controller"),
])
def test_a_cluster_that_cannot_be_read_is_submitted_to_unchecked(bin_dir, monkeypatch, caplog, script, why):
    if script is None:
        monkeypatch.setenv("PATH", str(bin_dir))  # no scontrol anywhere
    else:
        fake(bin_dir, "scontrol", script)
    with pytest.raises(slurm_cluster.ClusterUnknown, match=re.escape(why)):
        slurm_cluster.read_cluster()
    with caplog.at_level(logging.WARNING):
        launcher()._check_request()  # no exception: the sweep goes on
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("could not check the request against the cluster (") and why in warning
    assert warning.endswith("submitting it unchecked") and "\n" not in warning


def test_the_defaults_are_refused_on_a_small_node(bin_dir):
    """The issue's case: 8 CPUs, 32 GB and a GPU per job on a node of 2 CPUs and 23 GB."""
    node = "NodeName=vm CPUTot=2 CPUEfctv=2 Gres=gpu:1 RealMemory=23081 Partitions=debug State=IDLE"
    fake(bin_dir, "scontrol", f"""case "$*" in
  *"show partition"*) {printing("PartitionName=debug AllowAccounts=ALL AllowQos=ALL Default=YES MaxTime=UNLIMITED")} ;;
  *"show node"*) {printing(node)} ;;
esac""")
    with pytest.raises(SweepFailed) as refused:
        launcher()._check_request()
    assert refused.value.code == ("synbench: error: hydra.launcher.cpus_per_task=8, but partition debug's nodes "
                                  "have 2 CPUs (at most cpus_per_task=2); nothing was submitted")
    with pytest.raises(SweepFailed, match=r"mem_gb=32, but partition debug's nodes have 23081 MB of memory \(at most "
                                          r"mem_gb=22\)"):
        launcher(cpus_per_task=2)._check_request()
    launcher(cpus_per_task=2, mem_gb=22)._check_request()  # fits: nothing said


def test_the_launchers_own_keys_never_reach_submitit():
    own = launcher(pending_grace_s=7, poll_s=0.5)
    assert (own.precheck, own.pending_grace_s, own.poll_s) == (True, 7.0, 0.5)
    assert not {"precheck", "pending_grace_s", "poll_s"} & set(own.params)
    assert own._executor().parameters["time"] == 120  # submitit takes the rest (it refuses unknown keys)
    with pytest.raises(SweepFailed, match="poll_s=0"):
        launcher(poll_s=0)
    with pytest.raises(Exception, match="nosuchkey"):  # the schema still refuses unknown keys at compose time
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.nosuchkey=1"],
                    return_hydra_config=True)


def test_sbatch_refusing_the_sweep_is_one_line(bin_dir, tmp_path, capsys):
    fake(bin_dir, "sbatch", printing("", 1, "sbatch: error: Batch job submission failed: Invalid feature "
                                            "specification"))
    submit = launcher(constraint="nosuchfeature", submitit_folder=str(tmp_path / "sub" / "%j"))
    with pytest.raises(SweepFailed) as refused:
        submit._submit([(0, ["seed=0"]), (1, ["seed=1"])])
    assert refused.value.code == ("synbench: error: sbatch refused the sweep's 2 jobs: Batch job submission failed: "
                                  "Invalid feature specification (check hydra.launcher.constraint=nosuchfeature); "
                                  "nothing was submitted")
    assert capsys.readouterr().err == ""  # submitit's own print of sbatch's complaint is in the line, not above it
    assert (bin_dir / "sbatch.args").is_file()  # sbatch was really asked


# --- while the jobs wait -------------------------------------------------------------------------------------

def test_squeue_is_read_task_by_task(bin_dir):
    fake(bin_dir, "squeue", printing("7_0|RUNNING|None\n7_1|PENDING|Resources\n"
                                     "9|PENDING|ReqNodeNotAvail, UnavailableNodes:g[1-2]"))
    assert slurm_cluster.queue(["7_0", "7_1", "9"]) == {"7_0": ("RUNNING", "None"), "7_1": ("PENDING", "Resources"),
                                                "9": ("PENDING", "ReqNodeNotAvail, UnavailableNodes:g[1-2]")}
    assert (bin_dir / "squeue.args").read_text().split() == ["-h", "-r", "-j", "7,9", "-o", "%i|%T|%r"]
    fake(bin_dir, "squeue", printing("", 1, "slurm_load_jobs error: Invalid job id specified"))
    assert slurm_cluster.queue(["7_0"]) == {}  # every job has left the queue
    fake(bin_dir, "squeue", printing("", 1, "slurm_load_jobs error: Unable to contact slurm controller"))
    assert slurm_cluster.queue(["7_0"]) is None  # nothing known this time


@pytest.mark.parametrize("reason, key", [
    ("PartitionConfig", "hydra.launcher.cpus_per_task"), ("PartitionTimeLimit", "hydra.launcher.timeout_min"),
    ("PartitionNodeLimit", "hydra.launcher.nodes"), ("BadConstraints", "hydra.launcher.constraint"),
    ("DependencyNeverSatisfied", "hydra.launcher.additional_parameters.dependency"),
    ("InvalidAccount", "hydra.launcher.account"), ("InvalidQOS", "hydra.launcher.qos"),
    ("QOSMaxGRESPerJob", "hydra.launcher.qos"), ("AssocMaxWallDurationPerJobLimit", "hydra.launcher.qos / account"),
    ("ReqNodeNotAvail, UnavailableNodes:ghost[1-2]", "hydra.launcher.additional_parameters.nodelist"),
])
def test_reasons_that_never_resolve_name_the_override(reason, key):
    meaning, fix = slurm_cluster.never_starts(reason, node_known=lambda name: not name.startswith("ghost"))
    assert key in fix and meaning
    if reason.startswith("ReqNodeNotAvail"):
        assert "ghost1, ghost2" in meaning


@pytest.mark.parametrize("reason", ["Priority", "Resources", "Dependency", "BeginTime", "JobArrayTaskLimit",
                                    "QOSMaxJobsPerUserLimit", "AssocGrpCpuLimit", "JobHeldUser", "PartitionDown",
                                    "ReqNodeNotAvail, UnavailableNodes:g1", "None", ""])
def test_reasons_that_resolve_keep_waiting(reason):
    assert slurm_cluster.never_starts(reason, node_known=lambda name: True) is None


def test_the_watch_reports_changes_once_and_waits_out_the_grace():
    watch = slurm_cluster.QueueWatch(grace_s=10, node_known=lambda name: True)
    assert watch.update({"7_0": ("PENDING", "None"), "7_1": ("PENDING", "Priority")}, now=0) == [
        ("7_0", "PENDING", "None"), ("7_1", "PENDING", "Priority")]
    assert watch.update({"7_0": ("PENDING", "None"), "7_1": ("PENDING", "Priority")}, now=1) == []  # no change
    assert watch.update({"7_0": ("PENDING", "PartitionConfig"), "7_1": ("PENDING", "Priority")}, now=2) == [
        ("7_0", "PENDING", "PartitionConfig")]
    assert watch.stuck(now=11) == {}  # 9 s of it: within the grace
    [(reason, meaning, fix)] = watch.stuck(now=12).values()
    assert reason == "PartitionConfig" and "hydra.launcher.partition" in fix
    watch.update({"7_0": ("PENDING", "Resources"), "7_1": ("RUNNING", "None")}, now=13)  # an admin fixed it
    assert watch.stuck(now=100) == {}
    watch.update({"7_0": ("PENDING", "BadConstraints")}, now=101)
    watch.update({}, now=102)  # left the queue (cancelled by someone): nothing to end
    assert watch.stuck(now=200) == {}


class FakeJob:
    """A submitit job as the launcher's wait loop sees it: done after ``polls`` calls of done()."""

    def __init__(self, job_id: str, polls: int = 10 ** 9):
        self.job_id, self.polls, self.forced = job_id, polls, []

    def done(self, force_check: bool = False) -> bool:
        self.forced.append(force_check)
        self.polls -= 1
        return self.polls < 0


LABELS = {"7_0": "#0 seed=0", "7_1": "#1 seed=1"}


def test_the_wait_logs_each_change_and_keeps_waiting_on_resources(bin_dir, caplog):
    fake(bin_dir, "squeue", printing("7_0|RUNNING|None\n7_1|PENDING|Resources"))
    fake(bin_dir, "scancel", "exit 0")
    jobs = [FakeJob("7_0", polls=3), FakeJob("7_1", polls=5)]
    with caplog.at_level(logging.INFO):
        launcher(pending_grace_s=0, poll_s=0.01)._wait(jobs, LABELS, 2)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("Slurm job")] == [
        "Slurm job 7_0 (#0 seed=0): RUNNING", "Slurm job 7_1 (#1 seed=1): PENDING (Resources)"]  # once each
    assert not (bin_dir / "scancel.args").exists()


def test_a_reason_that_never_resolves_ends_the_sweep_and_cancels_its_jobs(bin_dir):
    fake(bin_dir, "squeue", printing("7_0|PENDING|PartitionConfig\n7_1|PENDING|PartitionConfig"))
    fake(bin_dir, "scancel", "exit 0")
    with pytest.raises(SweepFailed) as ended:
        launcher(pending_grace_s=0, poll_s=0.01)._wait([FakeJob("7_0"), FakeJob("7_1")], LABELS, 3)
    line = ended.value.code
    assert "\n" not in line and line.startswith("synbench: error: 2 of 3 jobs can never start: Slurm keeps them "
                                                "PENDING with reason PartitionConfig for Slurm jobs 7_0 (#0 seed=0), "
                                                "7_1 (#1 seed=1): no node of the partition can hold")
    assert "hydra.launcher.cpus_per_task" in line and "the sweep's Slurm jobs were cancelled" in line
    assert (bin_dir / "scancel.args").read_text().split() == ["7"]  # the whole array


def test_jobs_that_cannot_be_cancelled_are_named_for_the_user(bin_dir):
    fake(bin_dir, "squeue", printing("7_0|PENDING|DependencyNeverSatisfied"))
    fake(bin_dir, "scancel", printing("", 1, "scancel: error: Kill job error on job id 7: Access/permission denied"))
    with pytest.raises(SweepFailed, match=r"DependencyNeverSatisfied .*could not be cancelled \(scancel failed: "
                                          r"scancel: error: Kill job error.*\): scancel 7;"):
        launcher(pending_grace_s=0, poll_s=0.01)._wait([FakeJob("7_0")], LABELS, 1)


def test_a_job_that_leaves_the_queue_is_rechecked_at_once(bin_dir):
    """submitit reads sacct at its own pace (slowing to every 10 minutes); a job squeue no longer lists is
    asked about once, forced, on the next round (once: without accounting sacct never answers)."""
    queue = bin_dir / "queue.txt"
    queue.write_text("7_0|RUNNING|None\n")
    fake(bin_dir, "squeue", f'cat "{queue}"; : > "{queue}"')  # listed once, then gone
    job = FakeJob("7_0", polls=4)
    launcher(pending_grace_s=0, poll_s=0.01)._wait([job], LABELS, 1)
    assert job.forced == [False, False, True, False, False]
