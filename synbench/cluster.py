"""What a Slurm cluster offers and what its queue says, for the launcher (``synbench/launcher.py``): a job Slurm
can never start would wait forever, so the launcher compares the request with what each partition's nodes have
(``scontrol``; ``misfit``) before submitting, reads each job's state and pending reason (``squeue``) while it
waits, and knows which reasons never resolve by waiting (``never_starts``). What Slurm says about one job and
its attempts (run tags, staleness) is ``synbench.tracking.slurm``."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field


# --- what the cluster offers, and whether a request fits it (the launcher's check before submitting) ---------
# A job Slurm can never run is still queued by sbatch (reason PartitionConfig, ...), and waits forever: the
# launcher compares the request with what each partition's nodes have, before anything is submitted.

class ClusterUnknown(RuntimeError):
    """``scontrol`` did not say what the cluster has (missing, failing, or too slow): nothing can be checked."""


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gres: list[tuple[str, str | None, int]]  # (name, type or None, count): "gpu:a100:4" -> ("gpu", "a100", 4)


@dataclass
class Partition:
    name: str
    default: bool = False
    max_time_min: float | None = None  # None: unlimited
    max_nodes: int | None = None
    max_cpus_per_node: int | None = None
    max_mem_per_node_mb: int | None = None
    allow_accounts: set[str] | None = None  # None: all
    allow_qos: set[str] | None = None
    nodes: list[Node] = field(default_factory=list)


def read_cluster(timeout_s: float = 15) -> dict[str, Partition]:
    """Every partition (hidden ones too) with its nodes, as ``scontrol`` reports them; ClusterUnknown when it
    does not answer."""
    parts = {}
    for fields in _records(["scontrol", "-a", "-o", "show", "partition"], timeout_s):
        if "PartitionName" not in fields:
            continue
        parts[fields["PartitionName"]] = Partition(
            fields["PartitionName"], fields.get("Default") == "YES", slurm_minutes(fields.get("MaxTime", "")),
            _limit(fields.get("MaxNodes")), _limit(fields.get("MaxCPUsPerNode")), _limit(fields.get("MaxMemPerNode")),
            _names(fields.get("AllowAccounts")), _names(fields.get("AllowQos")))
    if not parts:
        raise ClusterUnknown("scontrol show partition listed no partition")
    for fields in _records(["scontrol", "-a", "-o", "show", "node"], timeout_s):
        if "NodeName" not in fields:
            continue
        cpus = fields.get("CPUEfctv") or fields.get("CPUTot") or "0"  # CPUEfctv: less the cores Slurm keeps
        mem = int(fields.get("RealMemory") or 0) - int(fields.get("MemSpecLimit") or 0)
        node = Node(fields["NodeName"], int(cpus), mem, parse_gres(fields.get("Gres", "")))
        for name in (fields.get("Partitions") or "").split(","):
            if name in parts:
                parts[name].nodes.append(node)
    return parts


def _records(cmd: list[str], timeout_s: float) -> list[dict[str, str]]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except OSError as err:
        raise ClusterUnknown(f"{cmd[0]} is not available ({err.strerror or err})") from None
    except subprocess.TimeoutExpired:
        raise ClusterUnknown(f"{' '.join(cmd)} did not answer in {timeout_s:g} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ClusterUnknown(f"{' '.join(cmd)} failed: {why}")
    # one record a line; a value ends at the next space (values with spaces, such as OS=, are not needed)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in done.stdout.splitlines() if line.strip()]


def _limit(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None  # UNLIMITED, N/A


def _names(value: str | None) -> set[str] | None:
    return None if not value or value == "ALL" else set(value.split(","))


def slurm_minutes(text: str) -> float | None:
    """Slurm's time (``MaxTime``: minutes, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes; None for
    no limit."""
    text = text.strip()
    if text.upper() in {"", "UNLIMITED", "INFINITE", "NONE", "N/A"}:
        return None
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # MM or MM:SS
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def parse_gres(text: str) -> list[tuple[str, str | None, int]]:
    """``gpu:a100:4(S:0-1),gpu:2,mps:100`` -> (name, type, count) each; a count left out is 1."""
    out = []
    for item in re.sub(r"\([^)]*\)", "", text or "").split(","):
        bits = item.strip().split(":")
        if not bits[0] or bits[0] == "(null)":
            continue
        count = int(bits[-1]) if len(bits) > 1 and bits[-1].isdigit() else 1
        typ = bits[1] if len(bits) > 2 or (len(bits) == 2 and not bits[1].isdigit()) else None
        out.append((bits[0], typ, count))
    return out


def _has(node: Node, name: str, typ: str | None) -> int:
    return sum(c for n, t, c in node.gres if n == name and (typ is None or t == typ))


def misfit(params: dict, partitions: dict[str, Partition]) -> str | None:
    """Why Slurm could never start a job with the launcher's ``params`` (the submitit plugin's keys) in its
    partition (``partition``, else the cluster's default; of a list, any): one line naming the key, what the
    nodes have and the largest value that fits. None when some partition can hold it."""
    names = [p for p in (params.get("partition") or "").split(",") if p]
    if not names:
        names = [p.name for p in partitions.values() if p.default][:1]
        if not names:
            return (f"hydra.launcher.partition is not set and the cluster has no default partition (its "
                    f"partitions: {', '.join(sorted(partitions))})")
    unknown = [n for n in names if n not in partitions]
    if len(unknown) == len(names):
        return (f"hydra.launcher.partition={params.get('partition')}, but the cluster has no such partition (its "
                f"partitions: {', '.join(sorted(partitions))})")
    whys = [_misfit_one(params, partitions[n]) for n in names if n in partitions]
    return None if None in whys else whys[0]


def _gres_wanted(params: dict) -> list[tuple[str, str, str | None, int]]:
    """(key, name, type, count per node) of every generic resource the request asks for."""
    tasks = params.get("tasks_per_node") or 1
    out = []
    for key, per in (("gpus_per_node", 1), ("gpus_per_task", tasks)):
        value = params.get(key)
        if value:  # 2, or "a100:2"
            typ, _, count = str(value).rpartition(":")
            out.append((key, "gpu", typ or None, int(count) * per))
    for name, typ, count in parse_gres(params.get("gres") or ""):
        out.append(("gres", name, typ, count))
    return out


def _gres_text(gres: tuple[str, str | None, int]) -> str:
    return ":".join(str(b) for b in gres if b is not None)


def _most(values: list[int], unit: str) -> str:
    return f"{values[0]} {unit}" if len(set(values)) == 1 else f"at most {max(values)} {unit}"


def _misfit_one(params: dict, part: Partition) -> str | None:
    p, nodes = part.name, part.nodes
    if not nodes:
        return f"hydra.launcher.partition={p}, but partition {p} has no nodes"
    tasks = params.get("tasks_per_node") or 1
    per_task = params.get("cpus_per_task") or 1
    mem_mb = int(float(params["mem_gb"]) * 1024) if params.get("mem_gb") else 0
    cpus = [min(n.cpus, part.max_cpus_per_node or n.cpus) for n in nodes]
    mems = [min(n.mem_mb, part.max_mem_per_node_mb or n.mem_mb) for n in nodes]
    if per_task * tasks > max(cpus):
        if tasks > max(cpus):
            return (f"hydra.launcher.tasks_per_node={tasks}, but partition {p}'s nodes have {_most(cpus, 'CPUs')} "
                    f"(at most tasks_per_node={max(cpus)} with cpus_per_task=1)")
        times = f" x tasks_per_node={tasks}" if tasks > 1 else ""
        return (f"hydra.launcher.cpus_per_task={per_task}{times}, but partition {p}'s nodes have "
                f"{_most(cpus, 'CPUs')} (at most cpus_per_task={max(cpus) // tasks})")
    if mem_mb > max(mems):
        return (f"hydra.launcher.mem_gb={params['mem_gb']}, but partition {p}'s nodes have {_most(mems, 'MB')} of "
                f"memory (at most mem_gb={max(mems) // 1024})")
    wanted = _gres_wanted(params)
    for key, name, typ, count in wanted:
        have = [_has(n, name, typ) for n in nodes]
        if count > max(have):
            what = f"{name}:{typ}" if typ else name
            value = params[key]
            if not max(have):
                kinds = sorted({f"{n}:{t}" if t else n for node in nodes for n, t, _ in node.gres})
                return (f"hydra.launcher.{key}={value}, but no node of partition {p} has a {what} (they have "
                        f"{', '.join(kinds) or 'no generic resource'}; drop it with hydra.launcher.{key}=null)")
            per = tasks if key == "gpus_per_task" else 1
            fit = (f"{typ}:" if typ else "") + str(max(have) // per)
            if key == "gres":
                fit = ",".join(_gres_text((n, t, max(have) if (n, t) == (name, typ) else c))
                               for n, t, c in parse_gres(value))
            return (f"hydra.launcher.{key}={value}, but partition {p}'s nodes have {_most(have, what)} "
                    f"(at most {key}={fit})")
    fitting = [n for n, c, m in zip(nodes, cpus, mems) if per_task * tasks <= c and mem_mb <= m
               and all(count <= _has(n, name, typ) for _, name, typ, count in wanted)]
    if not fitting:  # each part fits some node, but no node holds them all at once
        shown = "; ".join(f"{n.name}: {c} CPUs, {m} MB, {','.join(map(_gres_text, n.gres)) or 'no gres'}"
                          for n, c, m in list(zip(nodes, cpus, mems))[:3])
        return (f"hydra.launcher's request ({per_task * tasks} CPUs, {mem_mb} MB, "
                f"{', '.join(f'{k}={params[k]}' for k, *_ in wanted) or 'no GPU'} per node) fits no single node of "
                f"partition {p} ({shown}{'; ...' if len(nodes) > 3 else ''})")
    most_nodes = min(len(fitting), part.max_nodes or len(fitting))
    if (params.get("nodes") or 1) > most_nodes:
        limit = (f"partition {p}'s MaxNodes is {part.max_nodes}" if part.max_nodes is not None
                 and part.max_nodes < len(fitting) else
                 f"only {len(fitting)} node{'s' * (len(fitting) != 1)} of partition {p} can hold the job")
        return f"hydra.launcher.nodes={params['nodes']}, but {limit} (at most nodes={most_nodes})"
    minutes = params.get("timeout_min")
    if part.max_time_min is not None and minutes and minutes > part.max_time_min:
        return (f"hydra.launcher.timeout_min={minutes}, but partition {p}'s MaxTime is {part.max_time_min:g} "
                f"minutes (at most timeout_min={int(part.max_time_min)})")
    for key, allowed in (("account", part.allow_accounts), ("qos", part.allow_qos)):
        if params.get(key) and allowed is not None and params[key] not in allowed:
            return f"hydra.launcher.{key}={params[key]}, but partition {p} allows only {', '.join(sorted(allowed))}"
    return None


# --- while the jobs wait: their state in the queue, and the reasons Slurm gives that never resolve -----------
# reason -> (what it means, the override that fixes it). Any other reason (Priority, Resources, Dependency,
# BeginTime, JobArrayTaskLimit, a QOS's or association's running-job limits, ...) resolves as other jobs end.
NEVER = {
    "PartitionConfig": ("no node of the partition can hold the job's request",
                        "ask for less per job (hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, gres) or another "
                        "partition (hydra.launcher.partition)"),
    "PartitionTimeLimit": ("the job's time limit is above the partition's MaxTime",
                           "lower hydra.launcher.timeout_min or choose another hydra.launcher.partition"),
    "PartitionNodeLimit": ("the job asks for more nodes than the partition gives one job",
                           "lower hydra.launcher.nodes or choose another hydra.launcher.partition"),
    "BadConstraints": ("no node has the features or resources the job asks for",
                       "fix hydra.launcher.constraint, gres or the per-job resources"),
    "DependencyNeverSatisfied": ("a job it depends on ended in a way that can never satisfy the dependency",
                                 "fix or drop the dependency (hydra.launcher.additional_parameters.dependency)"),
    "InvalidAccount": ("the job's account is not valid for you here",
                       "set hydra.launcher.account to one of yours (sacctmgr show assoc user=$USER)"),
    "InvalidQOS": ("the job's QOS is not valid for its account",
                   "set hydra.launcher.qos to a QOS your account may use (sacctmgr show assoc user=$USER)"),
}
PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob")  # the job alone is above a per-job limit
PER_JOB_FIX = ("the job alone is above a per-job limit of its {}",
               "ask for less per job (hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, gres, timeout_min, nodes) "
               "or use another hydra.launcher.qos / account")


def queue(job_ids: list[str], timeout_s: float = 15) -> dict[str, tuple[str, str]] | None:
    """``{job: (state, reason)}`` from ``squeue`` for the sweep's jobs (array tasks one by one, as submitit
    names them: ``<array>_<task>``); a job that has left the queue is absent. None when squeue does not answer
    (then nothing can be said this time)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"], capture_output=True,
                              text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # also "Invalid job id" once every job has left the queue
        return {} if "Invalid job id" in done.stderr else None
    rows = {}
    for line in done.stdout.splitlines():
        job, state, reason = (line.split("|", 2) + ["", ""])[:3]
        rows[job.strip()] = (state.strip(), reason.strip())
    return rows


def never_starts(reason: str, node_known=None) -> tuple[str, str] | None:
    """(what it means, how to fix it) when a PENDING job's ``reason`` can never resolve by waiting; None when it
    can. ``ReqNodeNotAvail`` resolves (a node down or reserved comes back) unless a node it names does not exist
    (``node_known``: name -> bool)."""
    word = reason.split(",")[0].strip()
    if word in NEVER:
        return NEVER[word]
    if PER_JOB_LIMIT.match(word):
        return PER_JOB_FIX[0].format("QOS" if word.startswith("QOS") else "association"), PER_JOB_FIX[1]
    if word == "ReqNodeNotAvail" and node_known is not None:
        names = re.search(r"UnavailableNodes:(\S+)", reason)
        missing = [n for n in expand_hostlist(names.group(1))] if names else []
        missing = [n for n in missing if not node_known(n)]
        if missing:
            return (f"the job asks for nodes that do not exist ({', '.join(missing)})",
                    "fix the node list (hydra.launcher.additional_parameters.nodelist, hydra.launcher.exclude)")
    return None


def expand_hostlist(text: str) -> list[str]:
    """``a[1-2,5],b`` -> a1, a2, a5, b (Slurm's host lists, one bracket per name)."""
    out = []
    for name in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", text):
        m = re.match(r"(.*)\[([^\]]*)\](.*)", name)
        if not m:
            out.append(name)
            continue
        for part in m.group(2).split(","):
            lo, _, hi = part.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                out.append(f"{m.group(1)}{str(i).zfill(len(lo))}{m.group(3)}")
    return out


def node_known(name: str, timeout_s: float = 15) -> bool:
    """Whether the cluster has a node ``name``; True when scontrol cannot say (a reason then keeps waiting)."""
    try:
        done = subprocess.run(["scontrol", "-o", "show", "node", name], capture_output=True, text=True,
                              timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return done.returncode == 0 or "not found" not in (done.stdout + done.stderr).lower()


class QueueWatch:
    """What the sweep's jobs wait for: each change of a job's (state, reason), and the jobs that have pended
    past ``grace_s`` for a reason that never resolves (the grace leaves time for a transient reason, or an
    administrator's fix, to clear)."""

    def __init__(self, grace_s: float, node_known=node_known):
        self.grace_s, self.node_known = grace_s, node_known
        self.seen: dict[str, tuple[str, str]] = {}
        self.since: dict[str, tuple[float, str, str, str]] = {}  # job -> (first seen, reason, meaning, fix)
        self._verdicts: dict[str, tuple[str, str] | None] = {}

    def update(self, rows: dict[str, tuple[str, str]], now: float) -> list[tuple[str, str, str]]:
        """Record squeue's ``rows``; the (job, state, reason) of each job whose state or reason changed."""
        changed = []
        for job, (state, reason) in rows.items():
            if self.seen.get(job) != (state, reason):
                self.seen[job] = (state, reason)
                changed.append((job, state, reason))
            verdict = self._verdict(reason) if state == "PENDING" else None
            if verdict is None:
                self.since.pop(job, None)
            elif job not in self.since or self.since[job][1] != reason:
                self.since[job] = (now, reason, *verdict)
        for job in set(self.since) - set(rows):  # left the queue
            del self.since[job]
        return changed

    def stuck(self, now: float) -> dict[str, tuple[str, str, str]]:
        """``{job: (reason, meaning, fix)}`` of the jobs pending for a never-resolving reason past the grace."""
        return {job: (reason, meaning, fix) for job, (t0, reason, meaning, fix) in self.since.items()
                if now - t0 >= self.grace_s}

    def _verdict(self, reason: str) -> tuple[str, str] | None:
        if reason not in self._verdicts:
            self._verdicts[reason] = never_starts(reason, self.node_known)
        return self._verdicts[reason]


def cancel(job_ids: list[str], timeout_s: float = 30) -> str | None:
    """``scancel`` the jobs (whole arrays); None when it did, else why not."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        done = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scancel failed: {err}"
    return None if done.returncode == 0 else f"scancel failed: {(done.stderr.strip() or 'no message')[:300]}"
