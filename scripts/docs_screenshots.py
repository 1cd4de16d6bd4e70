#!/usr/bin/env python
"""Screenshots of the MLflow UI for the docs (docs/img/), taken from real runs, by a script that remakes them.

    python scripts/docs_screenshots.py            # 1.5-2.5 minutes on 2 CPU cores; writes docs/img/
    python scripts/docs_screenshots.py --keep     # also keep the temporary folder (runs, store, UI log)

Why a script: hand-made screenshots drift from what the code logs and nobody can say how they were made.
This one starts from nothing, in a temporary folder (never the repo's outputs/), on the CPU:
1. makes real results: a 4-job sweep (two tiny timm models x two seeds) and the default model comparison,
   both logging to one SQLite store (artifacts beside it);
2. starts ``mlflow ui`` on that store on a free localhost port, the command a job prints;
3. drives headless Chromium (selenium + Debian's chromedriver) to the runs table with the sweep expanded, a
   job's accuracy-vs-scale plot and the comparison's manifold of models, waiting for each page's content;
4. writes the PNGs and ``docs/img/PROVENANCE.txt`` (what each shows, the commands, date, machine, versions).
The UI, chromedriver and Chromium are always stopped, whatever happens.
Needs: ``apt-get install chromium chromium-driver`` and ``pip install -e .[docs]`` (selenium).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
WINDOW = (1600, 1000)
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars",
                "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--force-device-scale-factor=1", "--lang=en-US"]
TIMEOUT_S = 60  # for the UI to answer and for each page's content
MAX_PNG_BYTES = 400_000
SWEEP = ["model.name=test_vit,test_resnet", "seed=0,1"]
SWEEP_NAME = "docs"  # the sweep folder's name: the parent run is "sweep docs"


class Failed(SystemExit):
    """A one-line failure: ``docs_screenshots: <what went wrong and what to do>``."""

    def __init__(self, msg: str):
        super().__init__(f"docs_screenshots: {msg}")


def require_tools() -> tuple[str, str]:
    """Chromium, chromedriver and selenium, or a one-line error naming what to install."""
    chromium = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise Failed(f"{'chromium' if not chromium else 'chromedriver'} not found on PATH: "
                     "apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise Failed("selenium is not installed: pip install -e .[docs]") from None
    return chromium, driver


def run_step(cmd: list[str], cwd: Path, log: Path) -> None:
    """Run one command in ``cwd``, its output to ``log``; on failure, say so with the log's tail."""
    print(f"$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-5:])
        raise Failed(f"`{shlex.join(cmd)}` exited {rc} (log {log}): {tail}")
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def make_runs(tmp: Path) -> tuple[str, list[list[str]]]:
    """The sweep and the comparison, both on the CPU into ``tmp``'s one store; returns (uri, commands)."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    common = [f"paths.outputs={tmp}", f"tracking.uri={uri}", "device=cpu", "progress=false"]
    py = sys.executable
    cmds = [[py, "-m", "synbench", "--multirun", *SWEEP, *common, f"hydra.sweep.dir={tmp}/sweeps/{SWEEP_NAME}"],
            [py, "-m", "synbench.compare", *common, f"hydra.run.dir={tmp}/compare"]]
    for cmd, log in zip(cmds, ["sweep.log", "compare.log"]):
        run_step(cmd, tmp, tmp / log)
    return uri, cmds


def find_runs(uri: str, tmp: Path) -> dict[str, str]:
    """Experiment id and the run ids the shots open; checks every artifact landed under ``tmp``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("synbench")
    runs = client.search_runs([exp.experiment_id])
    outside = [r.info.artifact_uri for r in runs if not r.info.artifact_uri.startswith(f"file://{tmp}/")]
    if outside:
        raise Failed(f"artifacts landed outside {tmp}: {outside[0]}")
    kind = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        kind.setdefault(r.data.tags.get("synbench.kind"), r)
    missing = {"sweep", "job", "comparison"} - set(kind)
    if missing:
        raise Failed(f"the store has no {', '.join(sorted(missing))} run (see the logs under {tmp})")
    return {"exp": exp.experiment_id, "sweep": kind["sweep"].info.run_id, "job": kind["job"].info.run_id,
            "job_name": kind["job"].info.run_name, "comparison": kind["comparison"].info.run_id,
            "comparison_name": kind["comparison"].info.run_name}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, tmp: Path, cleanup: contextlib.ExitStack) -> tuple[str, list[str]]:
    """``mlflow ui`` on the store, in its own process group (its uvicorn worker is a child) that ``cleanup``
    stops; returns its address and command once it answers."""
    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "ui", "--backend-store-uri", uri, "--workers", "1", "--host", "127.0.0.1",
           "--port", str(port)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp / "mlflow-ui.log"
    print(f"$ MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {shlex.join(cmd)}", flush=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.callback(stop_process_group, proc)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = log.read_text().strip().splitlines()[-1:] or ["no output"]
            raise Failed(f"mlflow ui exited {proc.returncode}: {last[0]} (log {log})")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return base, cmd
        except OSError:
            time.sleep(0.5)
    raise Failed(f"mlflow ui did not answer on {base} within {TIMEOUT_S} s (log {log})")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group led by ``proc`` (ours alone: start_new_session), SIGKILL what is left after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so that an empty group reads as gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def open_browser(chromium: str, driver_path: str, tmp: Path, cleanup: contextlib.ExitStack):
    """Headless Chromium through Debian's chromedriver, with a throw-away profile under ``tmp``; ``cleanup``
    quits both."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp / 'chromium-profile'}"]:
        opts.add_argument(flag)
    service = Service(driver_path, log_output=str(tmp / "chromedriver.log"))
    cleanup.callback(service.stop)  # chromedriver, even when Chromium never came up
    try:
        browser = webdriver.Chrome(service=service, options=opts)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise Failed(f"headless Chromium did not start: {first} (log {tmp / 'chromedriver.log'})") from None
    cleanup.callback(browser.quit)
    return browser


def goto(browser, url: str) -> None:
    """Load ``url`` as a fresh page (a hash-only change would not reload the app) with the assistant closed."""
    browser.get("about:blank")
    browser.get(url.split("#")[0])
    browser.execute_script("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                           "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")
    browser.get("about:blank")
    browser.get(url)


def wait_for(browser, what: str, check, timeout: float = TIMEOUT_S):
    """Poll ``check(browser)`` until it returns something truthy; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check(browser)
        except Exception:  # the page is still rendering: stale or missing elements
            found = None
        if found:
            return found
        time.sleep(0.3)
    raise Failed(f"the MLflow UI never showed {what} within {timeout:.0f} s at {browser.current_url}")


def visible_text(text: str):
    """A check: a displayed element whose own text contains ``text``."""
    from selenium.webdriver.common.by import By

    quoted = "concat('" + "', \"'\", '".join(text.split("'")) + "', '')"
    return lambda b: [e for e in b.find_elements(By.XPATH, f"//*[contains(text(), {quoted})]") if e.is_displayed()]


def image_loaded(b) -> bool:
    """A check: the artifact viewer's <img> (a blob: URL, so it does not name the file) has loaded."""
    return b.execute_script("return [...document.images].some(i => i.complete && i.naturalWidth > 300)")


def save_png(browser, out: Path, bottom: int | None = None) -> None:
    """The viewport, cut at ``bottom`` pixels when given, as an optimised PNG (checked against the size cap)."""
    from PIL import Image

    time.sleep(1.0)  # let the last layout pass and fade-ins settle
    img = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    if bottom is not None:
        img = img.crop((0, 0, img.width, min(img.height, bottom)))
    img.save(out, optimize=True)
    if out.stat().st_size > MAX_PNG_BYTES:  # a palette of 256 colours is exact enough for a flat UI
        img.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"  {out.relative_to(ROOT)}: {img.width}x{img.height}, {out.stat().st_size // 1000} KB", flush=True)


def shoot_sweep_table(browser, base: str, ids: dict) -> Path:
    """The runs table (default columns), the sweep's and the comparison's parents expanded into their runs."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    goto(browser, f"{base}/#/experiments/{ids['exp']}/runs?workflowType=machine_learning")
    wait_for(browser, f"the sweep's parent run 'sweep {SWEEP_NAME}'", visible_text(f"sweep {SWEEP_NAME}"))
    name_col = '[col-id="attributes.`Run Name`"]'
    handle = wait_for(browser, "the Run Name column's header", lambda b: b.find_elements(
        By.CSS_SELECTOR, f".ag-header-cell{name_col} .ag-header-cell-resize"))[0]
    ActionChains(browser).drag_and_drop_by_offset(handle, 170, 0).perform()  # room for the job runs' names
    for parent in (ids["sweep"], ids["comparison"]):
        button = wait_for(browser, f"the expander of run {parent}", lambda b: [
            e for e in b.find_elements(By.CSS_SELECTOR, f'.ag-row[row-id="{parent}"] {name_col} button')
            if e.is_displayed()])[0]
        button.click()
    wait_for(browser, f"the job run '{ids['job_name']}'", visible_text(ids["job_name"]))
    wait_for(browser, "the comparison's pair runs", visible_text(" vs "))
    browser.execute_script("document.activeElement.blur()")  # no focus ring, no hover icons in the shot
    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h2")).perform()
    rows = browser.find_elements(By.CSS_SELECTOR, ".ag-row")
    bottom = max(r.rect["y"] + r.rect["height"] for r in rows if r.is_displayed())
    out = IMG / "mlflow-sweep-table.png"
    save_png(browser, out, bottom=int(bottom) + 48)
    return out


def shoot_artifact(browser, base: str, ids: dict, run: str, name: str, path: str, out: Path) -> Path:
    """A run's Artifacts tab showing the image artifact ``path``."""
    goto(browser, f"{base}/#/experiments/{ids['exp']}/runs/{ids[run]}/artifacts/{path}?workflowType=machine_learning")
    wait_for(browser, f"run '{name}'", visible_text(name))
    wait_for(browser, f"the artifact viewer's title {path}", visible_text(path))
    wait_for(browser, f"the image of {path}", image_loaded)
    save_png(browser, out)
    return out


def provenance(shots: list[tuple[Path, str]], cmds: list[list[str]], ui_cmd: list[str], browser,
               tmp: Path) -> list[str]:
    """One line per image: file, what it shows, the commands that made the runs (the venv's python as
    ``python``, the temporary folder as ``$TMP``), date, machine, versions."""
    import mlflow

    def shown(cmd: list[str]) -> str:
        words = ["python" if w == sys.executable else Path(w).name if w == ui_cmd[0] else w for w in cmd]
        return shlex.join(words).replace(str(tmp), "$TMP").replace("'", "")

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = f"{platform.machine()}, {cores} cores, CPU only"
    versions = f"mlflow {mlflow.__version__}, Chromium {browser.capabilities.get('browserVersion', '?')}"
    runs = " && ".join(f"cd $TMP && {shown(c)}" if i == 0 else shown(c) for i, c in enumerate(cmds))
    ui = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false " + shown(ui_cmd)
    return [f"{p.relative_to(ROOT)}: {what}. Runs ($TMP a fresh temporary folder): {runs}. UI: {ui}. "
            f"Made {date} on {machine}; {versions}; by scripts/docs_screenshots.py." for p, what in shots]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (runs, store, logs)")
    args = p.parse_args(argv)
    chromium, driver_path = require_tools()
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="synbench-docs-"))
    with contextlib.ExitStack() as cleanup:  # on the way out, whatever happens: browser, UI, then the folder
        if args.keep:
            cleanup.callback(print, f"kept {tmp}")
        else:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        uri, cmds = make_runs(tmp)
        ids = find_runs(uri, tmp)
        base, ui_cmd = start_ui(uri, tmp, cleanup)
        browser = open_browser(chromium, driver_path, tmp, cleanup)
        IMG.mkdir(parents=True, exist_ok=True)
        shots = [
            (shoot_sweep_table(browser, base, ids),
             f"the runs table of experiment synbench (default columns), the sweep's parent run 'sweep {SWEEP_NAME}' "
             "expanded into its 4 job runs and the comparison's parent into its 3 pair runs"),
            (shoot_artifact(browser, base, ids, "job", ids["job_name"], "plots/synbench_accuracy_vs_scale.png",
                            IMG / "mlflow-job-plots.png"),
             f"job run '{ids['job_name']}', Artifacts tab: plots/synbench_accuracy_vs_scale.png "
             "(probe accuracy vs mixture scale per eps, raw-input Bayes reference)"),
            (shoot_artifact(browser, base, ids, "comparison", ids["comparison_name"],
                            "plots/manifold_of_models.png", IMG / "mlflow-manifold.png"),
             f"comparison run '{ids['comparison_name']}', Artifacts tab: plots/manifold_of_models.png "
             "(classical MDS of the data-kernel distances)"),
        ]
        lines = provenance(shots, cmds, ui_cmd, browser, tmp)
    (IMG / "PROVENANCE.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(["", *lines, "", f"wrote {IMG.relative_to(ROOT)}/PROVENANCE.txt; "
                     f"{time.perf_counter() - t0:.0f} s end to end"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
