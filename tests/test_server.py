"""Many writers on a real tracking server: PostgreSQL and ``mlflow server`` on loopback, started by
``scripts/tracking_server`` as docs/slurm.md shows; parallel sweeps log through it, and an outage mid-sweep loses
nothing that a re-run cannot complete. Also a real sweep through Hydra's submitit launcher (Slurm's local twin).

The server is locked down (issue 42): PostgreSQL asks every connection (socket, TCP) for a generated password that
only the server's owner can read and that no command line or log shows, and listens on 127.0.0.1 only; MLflow's
basic-auth refuses anonymous clients and admits the users its admin makes; a folder the old script made (a
PostgreSQL that trusted every local user) is upgraded; folder names with spaces and shell metacharacters work.

Needs PostgreSQL's server binaries (Debian: ``apt-get install postgresql``); ``.ci/run`` installs them. Outside
CI, where they are absent, these tests skip and say why."""

import contextlib
import glob
import ipaddress
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from synbench import report

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "tracking_server"
IS_ROOT = os.geteuid() == 0
JOB = ["mixture.scales=[0.5,1.5,2.5,3.5]", "mixture.n_train=64", "mixture.n_test=64", "mixture.chunk_size=32",
       "epsilon.grid=[0.0,0.5]", "progress=false", "embed.batch_size=64"]
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# A folder name a shell would split and run: pg_ctl hands its -D and -o to one (the bug of issue 42).
ODD_NAME = "old state $(touch PWNED) 'q\""


def postgres_available() -> bool:
    return shutil.which("initdb") is not None or bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def need_postgres() -> None:
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are missing in CI: .ci/run installs them (apt-get install postgresql)")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")


def pg_tool(name: str) -> str:
    """A PostgreSQL binary from the folder scripts/tracking_server uses (initdb's on PATH, else Debian's newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return str(Path(initdb).resolve().parent / name)
    return sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_root() -> Path:
    """A folder PostgreSQL's own user can enter when the suite runs as root (pytest's tmp_path is private)."""
    root = Path(tempfile.mkdtemp(prefix="synbench-server-"))
    root.chmod(0o755)
    return root


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_postmaster(pgdata: Path) -> None:
    """The PostgreSQL a test started, by the PID in its postmaster.pid, should ``--stop`` have left it running."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return  # a stale file whose PID another process has now
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGINT, signal.SIGKILL):  # PostgreSQL's fast shutdown, then none
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.time() + 30
        while alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if not alive(pid):
            return


class Server:
    """scripts/tracking_server in a process group of its own, so a test can stop it mid-sweep."""

    def __init__(self, root: Path, name: str = "team state", args: tuple = ()):
        self.root, self.dir, self.args = root, root / name, list(args)
        self.port, self.pg_port = free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"  # the script's output and the MLflow server's
        self.proc = None

    def secret(self, name: str) -> str:
        """A password the script generated: DIR/secrets/pgpass (libpq's format) or admin_password, ..."""
        text = (self.dir / "secrets" / name).read_text().strip()
        return text.rsplit(":", 1)[1] if name == "pgpass" else text

    @property
    def admin(self) -> dict:
        """The environment an MLflow client logs in with as the admin (basic-auth)."""
        return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": self.secret("admin_password")}

    def start(self, timeout: float = 180) -> None:
        log = open(self.log, "a")
        self.proc = subprocess.Popen([str(SCRIPT), str(self.dir), "--port", str(self.port), "--pg-port",
                                      str(self.pg_port), "--workers", "1", *self.args],
                                     stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tracking server exited: {self.log.read_text()[-2000:]}")
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).read().strip() == b"OK":
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("tracking server did not answer /health in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop_database(self) -> None:
        subprocess.run([str(SCRIPT), str(self.dir), "--stop"], capture_output=True, timeout=120)
        stop_postmaster(self.dir / "postgres")


@contextlib.contextmanager
def running(srv: Server, prepare=None):
    """The server up for the block; afterwards the server, then its PostgreSQL, stopped whatever happened."""
    try:
        if prepare:
            prepare(srv)
        srv.start()
        yield srv
    finally:
        srv.stop()
        srv.stop_database()
        shutil.rmtree(srv.root, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """The team server on loopback (no basic-auth: loopback's default), in a folder whose name has a space."""
    need_postgres()
    with running(Server(server_root())) as srv:
        yield srv


def make_old_dir(srv: Server) -> None:
    """What scripts/tracking_server made before issue 42, left running: a PostgreSQL that lets any local user in
    as its superuser with no password (`initdb --auth=trust`), and artifacts any local user can read."""
    pgdata, artifact = srv.dir / "postgres", srv.dir / "artifacts" / "0" / "results.json"
    artifact.parent.mkdir(parents=True)
    artifact.write_text("{}")
    for path in (srv.dir, artifact.parent.parent, artifact.parent):
        path.chmod(0o755)
    artifact.chmod(0o644)
    pgdata.mkdir()
    as_pg = []
    if IS_ROOT:
        os.chown(pgdata, pwd.getpwnam("postgres").pw_uid, -1)
        as_pg = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "PGDATA": str(pgdata)}  # not -D: pg_ctl would hand the odd name to a shell
    subprocess.run([*as_pg, pg_tool("initdb"), "-U", "mlflow", "--auth=trust"], env=env, check=True,
                   capture_output=True)
    with open(srv.root / "old-postgres.log", "ab") as log:
        subprocess.run([*as_pg, pg_tool("pg_ctl"), "-w", "-o", f"-p {srv.pg_port} -c listen_addresses=127.0.0.1 "
                        f"-k {shlex.quote(str(pgdata))}", "start"], env=env, check=True, stdout=log, stderr=log)
    assert psql(srv, "127.0.0.1").returncode == 0  # the hole: in with no password


@pytest.fixture(scope="module")
def auth_server():
    """A server with --auth (MLflow's basic-auth), started on a folder of the old script's, with an odd name."""
    need_postgres()
    with running(Server(server_root(), ODD_NAME, ("--auth",)), prepare=make_old_dir) as srv:
        yield srv


def psql(srv: Server, host: str, env: dict | None = None, user: str | None = None,
         sql: str = "SELECT current_user") -> subprocess.CompletedProcess:
    """psql as the database user mlflow, never prompting: no password unless ``env`` brings one (PGPASSFILE)."""
    cmd = [pg_tool("psql"), "-h", host, "-p", str(srv.pg_port), "-U", "mlflow", "-d", "postgres", "-w", "-tAc", sql]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(cmd, env={**clean, "HOME": str(srv.root), **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def listening(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port``, whatever process owns it (/proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, local_port = local.split(":")
                if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                    found.add(str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))))
    return found


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def sweep(outputs: Path, *overrides: str, env: dict | None = None, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "synbench", "--multirun", f"paths.outputs={outputs}", *JOB, *overrides]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, **popen)


def job_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`synbench.kind` = 'job'", max_results=1000)


def check_complete(client, runs) -> None:
    """Each FINISHED run holds every metric its job wrote to results.json, each logged once."""
    for run in runs:
        assert run.info.status == "FINISHED"
        results = json.loads(Path(client.download_artifacts(run.info.run_id, "results.json")).read_text())
        for name, metric in results["metrics"].items():
            for key in metric["scalars"]:
                assert f"{name}/{key}" in run.data.metrics, (run.info.run_id, name, key)
        assert len(client.get_metric_history(run.info.run_id, "synbench/score")) == 1


def test_parallel_sweep_through_a_postgres_backed_server(server, tmp_path):
    proc = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "tracking=server",
                 f"tracking.uri={server.uri}", "tracking.experiment=team", "seed=0,1,2,3")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(server.uri)
    runs = job_runs(client, "team")
    assert len(runs) == 4  # every job arrived, none twice
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["synbench.config_hash"] for r in runs}) == 4
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    check_complete(client, runs)
    # the report reads the sweep back from the server and logs its files to the parent there
    assert report.main(["--parent", parent, "--tracking-uri", server.uri, "--out", str(tmp_path / "report"),
                        "--bootstrap", "50"]) == 0
    assert (tmp_path / "report" / parent / "report.csv").is_file()
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent, "report")}


def test_server_outage_mid_sweep_loses_nothing_a_rerun_cannot_complete(server, tmp_path):
    """Stop the server while two jobs are running: those end not FINISHED with their results on disk, the jobs
    after them fail fast, nothing is FINISHED with missing metrics; after a restart the same sweep completes."""
    slow = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tracking=server", f"tracking.uri={server.uri}",
            "tracking.experiment=outage", "seed=0,1,2,3", "mixture.n_train=512", "mixture.n_test=512",
            "mixture.scales=[0.5,1.0,1.5,2.0,2.5,3.0,3.5]"]
    proc = sweep(tmp_path / "first", *slow, env=FAST_FAIL)
    client = MlflowClient(server.uri)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("outage")
        running = exp and client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and "
                                                                 "tags.`synbench.kind` = 'job'")
        if running:
            break
        time.sleep(0.3)
    assert proc.poll() is None, "the sweep ended before the outage could be staged"
    server.stop()
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0
    assert "unreachable" in out  # the jobs after the outage: one line each, before any work
    on_disk = list((tmp_path / "first").rglob("results.json"))
    assert on_disk, "the running jobs' results must be on disk"

    server.start()
    before = job_runs(client, "outage")
    assert before and all(r.info.status != "FINISHED" for r in before)  # never FINISHED with missing metrics
    rerun = sweep(tmp_path / "second", *slow)
    out, _ = rerun.communicate(timeout=1200)
    assert rerun.returncode == 0, out[-3000:]
    after = job_runs(client, "outage")
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert sorted(r.data.params["seed"] for r in finished) == ["0", "1", "2", "3"]
    check_complete(client, finished)
    for r in after:
        if r.info.status != "FINISHED":  # the runs the outage interrupted: marked by the re-run, with the reason
            assert r.info.status == "KILLED" and "stale" in r.data.tags["synbench.error"]
    exp_id = client.get_experiment_by_name("outage").experiment_id
    sweeps = client.search_runs([exp_id], "tags.`synbench.kind` = 'sweep'", order_by=["attributes.start_time ASC"])
    assert [s.info.status for s in sweeps] == ["KILLED", "FINISHED"]  # the dead sweep is not left RUNNING
    saved = {json.loads(p.read_text())["job"]["config_hash"] for p in on_disk}
    assert saved <= {r.data.tags["synbench.config_hash"] for r in finished}


def test_the_database_asks_every_connection_for_its_password(server):
    """No password, a wrong one: refused over TCP and over the unix socket; the generated one (DIR/secrets/pgpass,
    through PGPASSFILE as the script hands it to psql and MLflow) gets in."""
    socket_dir = str(server.dir / "postgres")  # the folder name has a space
    for host in ("127.0.0.1", socket_dir):
        refused = psql(server, host)
        assert refused.returncode != 0 and "no password supplied" in refused.stderr, (host, refused.stderr)
        wrong = psql(server, host, env={"PGPASSWORD": "not-the-password"})
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, (host, wrong.stderr)
        admitted = psql(server, host, env={"PGPASSFILE": str(server.dir / "secrets" / "pgpass")})
        assert admitted.stdout.strip() == "mlflow", (host, admitted.stderr)


def test_other_local_users_cannot_get_in(server):
    """The reviewer's way in: as `nobody`, straight into the database (then COPY ... TO PROGRAM)."""
    if not IS_ROOT:
        pytest.skip("running psql as the nobody user needs root (runuser)")
    refused = psql(server, "127.0.0.1", user="nobody", sql="COPY (SELECT 1) TO PROGRAM 'true'")
    assert refused.returncode != 0 and "no password supplied" in refused.stderr, refused.stderr
    # the socket lies in the cluster's folder, which they cannot even enter
    refused = psql(server, str(server.dir / "postgres"), user="nobody")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr


def test_postgres_listens_on_loopback_only(server):
    assert listening(server.pg_port) == {"127.0.0.1"}
    shown = psql(server, "127.0.0.1", env={"PGPASSFILE": str(server.dir / "secrets" / "pgpass")},
                 sql="SHOW listen_addresses")
    assert shown.stdout.strip() == "127.0.0.1", shown.stderr
    assert listening(server.port) == {"127.0.0.1"}  # and MLflow on the --host it was given (the default)


def test_basic_auth_refuses_anonymous_clients_and_admits_the_team(auth_server, tmp_path, monkeypatch):
    """Anonymous or wrong: 401. The admin (password in DIR/secrets/admin_password) makes a user, whose job logs
    with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in its environment and a plain tracking.uri."""
    search = f"{auth_server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    for headers in ({}, basic("admin", "not-the-password")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(search, headers=headers), timeout=30)
        assert refused.value.code == 401
    admitted = urllib.request.urlopen(urllib.request.Request(
        search, headers=basic("admin", auth_server.secret("admin_password"))), timeout=30)
    assert admitted.status == 200

    from mlflow.server import get_app_client

    for key, value in auth_server.admin.items():
        monkeypatch.setenv(key, value)
    password = secrets.token_urlsafe(16)
    get_app_client("basic-auth", tracking_uri=auth_server.uri).create_user("alice", password)
    alice = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": password}
    proc = sweep(tmp_path, "tracking=server", f"tracking.uri={auth_server.uri}", "tracking.experiment=team",
                 env=alice)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(auth_server.uri)  # as the admin
    runs = job_runs(client, "team")
    assert len(runs) == 1
    check_complete(client, runs)


def test_a_folder_of_the_old_script_is_upgraded(auth_server):
    """The running PostgreSQL that trusted everyone now wants the password; the world-readable artifact is closed;
    the folder's shell metacharacters stayed characters."""
    assert "trusts every local user" in auth_server.log.read_text()
    refused = psql(auth_server, "127.0.0.1")
    assert refused.returncode != 0 and "no password supplied" in refused.stderr, refused.stderr
    pgpass = {"PGPASSFILE": str(auth_server.dir / "secrets" / "pgpass")}
    assert psql(auth_server, "127.0.0.1", env=pgpass).stdout.strip() == "mlflow"
    artifact = auth_server.dir / "artifacts" / "0" / "results.json"
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600
    pgdata = auth_server.dir / "postgres"
    assert not [d for d in (ROOT, auth_server.root, auth_server.dir, pgdata, Path.cwd()) if (d / "PWNED").exists()]


def test_the_printed_stop_command_pastes_back(auth_server):
    """What the script prints to paste is quoted for the shell (printf %q), odd folder name and all."""
    [line] = [x for x in auth_server.log.read_text().splitlines() if "stop the database: " in x][-1:]
    assert shlex.split(line.split("stop the database: ", 1)[1]) == [str(SCRIPT), str(auth_server.dir), "--stop"]


def test_secrets_and_artifacts_are_their_owners_alone(server, auth_server):
    """DIR closed to others (0700; 0711 as root, for PostgreSQL's and MLflow's accounts to pass), the secrets
    0600 in a 0700 folder, and what the server writes into the artifacts neither group- nor world-readable."""
    client = MlflowClient(server.uri)
    run = client.create_run(client.create_experiment("modes"))
    client.log_text(run.info.run_id, "probe", "probe.txt")
    for srv, names in ((server, {"pgpass"}), (auth_server, {"pgpass", "admin_password", "flask_secret_key"})):
        assert stat.S_IMODE(srv.dir.stat().st_mode) == (0o711 if IS_ROOT else 0o700)
        folder = srv.dir / "secrets"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = list(folder.iterdir())
        assert names <= {f.name for f in files}
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [(f.name, oct(f.stat().st_mode))
                                                                           for f in files]
        artifacts = [srv.dir / "artifacts", *(srv.dir / "artifacts").rglob("*")]
        assert all(stat.S_IMODE(p.lstat().st_mode) & 0o077 == 0 for p in artifacts), \
            [(str(p), oct(p.lstat().st_mode)) for p in artifacts if p.lstat().st_mode & 0o077]
    assert [p for p in (server.dir / "artifacts").rglob("probe.txt")]


def test_no_secret_in_a_command_line_or_a_log(server, auth_server):
    """Every process's arguments (ps) while both servers run, the script's and MLflow's output, PostgreSQL's log."""
    values = [server.secret("pgpass"), *(auth_server.secret(n) for n in ("pgpass", "admin_password",
                                                                        "flask_secret_key"))]
    assert all(len(v) >= 40 for v in values)
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert f"--port {auth_server.port}" in ps and "basic-auth" in ps  # the servers are there to be searched
    logs = [path for srv in (server, auth_server) for path in srv.root.rglob("*.log")]
    logs += [path for srv in (server, auth_server) for path in (srv.dir / "postgres").rglob("*.log")]
    assert len(logs) >= 5
    for value in values:
        assert value not in ps
        for path in logs:
            assert value not in path.read_text(errors="replace"), path


def test_as_root_mlflow_runs_as_the_user_given():
    """--user NAME: MLflow runs as that account, which owns the artifacts; where that account cannot run this
    venv's Python (a venv under /root), one line says so before anything starts."""
    if not IS_ROOT:
        pytest.skip("--user is for a start as root")
    need_postgres()
    can_run = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c",
                              "import importlib.util, sys; sys.exit(importlib.util.find_spec('mlflow') is None)"],
                             capture_output=True).returncode == 0
    srv = Server(server_root(), "as nobody", ("--user", "nobody"))
    if not can_run:
        try:
            done = subprocess.run([str(SCRIPT), str(srv.dir), "--port", str(srv.port), "--pg-port", str(srv.pg_port),
                                   "--user", "nobody"], capture_output=True, text=True, timeout=120)
            assert done.returncode == 1
            assert "--user nobody cannot run" in done.stderr and len(done.stderr.strip().splitlines()) == 1
            assert not (srv.dir / "postgres").exists()  # nothing started
        finally:
            srv.stop_database()
            shutil.rmtree(srv.root, ignore_errors=True)
        return
    with running(srv):
        ps = subprocess.run(["ps", "-o", "user=,args=", "--sid", str(srv.proc.pid)], capture_output=True, text=True)
        users = [line.split()[0] for line in ps.stdout.splitlines() if "mlflow" in line]
        assert len(users) >= 2 and set(users) == {"nobody"}, ps.stdout  # the server and its worker
        client = MlflowClient(srv.uri)
        run = client.create_run(client.create_experiment("nobody"))
        client.log_text(run.info.run_id, "probe", "probe.txt")
        [probe] = (srv.dir / "artifacts").rglob("probe.txt")
        assert probe.owner() == "nobody" and stat.S_IMODE(probe.stat().st_mode) == 0o600


def test_submitit_local_sweep(tmp_path):
    """Hydra's submitit launcher for real (submitit_local: the Slurm launcher's code path, minus Slurm)."""
    proc = sweep(tmp_path, "hydra/launcher=submitit_local", "seed=0,1", "tracking.experiment=submitit")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    runs = job_runs(client, "submitit")
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "synbench/score" in r.data.metrics for r in runs)
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).info.status == "FINISHED"
    assert len(list(tmp_path.rglob(".submitit"))) == 1  # it really went through submitit


def test_the_printed_ui_command_serves_the_runs(tmp_path):
    """The `mlflow ui` command a job prints (docs/mlflow-ui.md) opens the store."""
    from synbench.tracking.mlflow_run import MlflowTracker, ui_command

    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    tracker = MlflowTracker(uri, "ui", str(tmp_path / "artifacts"), 10)
    exp_id = tracker.connect()
    run = MlflowClient(uri).create_run(exp_id, run_name="shown")
    MlflowClient(uri).log_metric(run.info.run_id, "synbench/score", 0.25)
    port = free_port()
    cmd = ui_command(uri).replace("--port 5000", f"--port {port}")
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        [shown] = MlflowClient(f"http://127.0.0.1:{port}").search_runs([exp_id])
        assert shown.info.run_id == run.info.run_id and shown.data.metrics["synbench/score"] == 0.25
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
