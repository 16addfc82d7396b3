"""A real Dagster UI on a demo instance, and Debian's Chromium driven by Playwright.

The browser is the system's `/usr/bin/chromium`: nothing is ever downloaded. Without it (or
without the `playwright` package) the browser tests skip, before building any demo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "install Debian's chromium (apt-get install chromium) and `pip install playwright`; "
    "no browser download is needed"
)
# Known to work headless as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_TIMEOUT = 900.0  # seconds for the scripted demo (about 2 min here; a bound, not a target)
SERVER_START_TIMEOUT = 90.0  # seconds until the webserver answers with its code location loaded
BIN = Path(sys.executable).parent  # dagster-webserver and dagster-daemon of this venv
LOCATION = "mlops_loop.definitions"  # the code location's name for `-m mlops_loop.definitions`


# -- the browser --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium; skips the test when it or Playwright is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip(f"the playwright package is missing: {INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Dagster's UI remembers a dismissed "Join the Dagster community" modal in localStorage:
    # dismissed up front, it never hides what a screenshot is of.
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    page = context.new_page()
    page.set_default_timeout(30_000)
    # The UI greets a first visitor with a "Join the Dagster community" modal: skip it whenever
    # it shows up in front of what the test wants to click.
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"),
        lambda _: page.get_by_role("button", name="Skip").click(),
    )
    try:
        yield page
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            path = tmp_path / "screenshots" / "failure.png"
            page.screenshot(path=path, full_page=True)
            print(f"screenshot of the page at the failure: {path}")
    finally:
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- the Dagster UI on a demo instance ----------------------------------------------------------
@dataclass
class DagsterUI:
    url: str
    dagster_home: Path
    config_path: Path
    logs: dict[str, Path]
    demo_output: str  # what `mlops-loop demo` printed (its episode lines and summary)

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer
        return answer["data"]

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {name} ({path}) ---\n{path.read_text(errors='replace')[-chars:]}"
            for name, path in self.logs.items()
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start a server in a process group of its own, so it can be stopped with its children."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group (the code server and run workers included); SIGKILL whatever
    of it is still there after `grace` seconds."""
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (process.poll() is None or group_alive(process.pid)):
        time.sleep(0.2)
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_until_loaded(ui: DagsterUI, processes: list[subprocess.Popen]) -> None:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args[0]} exited early\n{ui.log_tails()}")
        try:
            entries = ui.graphql(query)["workspaceOrError"]["locationEntries"]
            if any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(1)
    pytest.fail(
        f"the Dagster webserver was not ready in {SERVER_START_TIMEOUT} s\n{ui.log_tails()}"
    )


@pytest.fixture(scope="session")
def demo_dir(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The scripted demo (champion v2 promoted at batch_005, v3 rejected at batch_007), built
    once for the session: its folder and what it printed.

    It asks for the browser first, so that a machine without one skips before the demo is built.
    """
    root = tmp_path_factory.mktemp("browser-demo")
    workdir, dagster_home = root / "demo", root / "dagster_home"
    # `mlops-loop demo` (run_demo) in a process of its own: its in-process Dagster runs must not
    # share this thread with Playwright's event loop, nor leave DAGSTER_HOME set in this process.
    demo = subprocess.run(
        [sys.executable, "-m", "mlops_loop.cli", "demo"]
        + ["--workdir", str(workdir), "--dagster-home", str(dagster_home), "--no-backtest"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    return root, demo.stdout


@pytest.fixture(scope="session")
def dagster_ui(demo_dir: tuple[Path, str]) -> Iterator[DagsterUI]:
    """The real Dagster webserver and daemon on the demo's instance, shared by the session's
    tests. The daemon is needed: runs launched from the UI are queued.

    Tests that change the loop's state (the rollback) live in the module collected last.
    """
    root, output = demo_dir
    workdir, dagster_home = root / "demo", root / "dagster_home"
    config_path = workdir / "loop.yaml"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_LOOP_CONFIG": str(config_path),
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    logs = {"webserver": root / "webserver.log", "daemon": root / "daemon.log"}
    ui = DagsterUI(f"http://127.0.0.1:{port}", dagster_home, config_path, logs, output)
    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            start(
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
                + ["-m", LOCATION],
                env,
                root,
                logs["webserver"],
            )
        )
        processes.append(
            start(
                [str(BIN / "dagster-daemon"), "run", "-m", LOCATION],
                env,
                root,
                logs["daemon"],
            )
        )
        wait_until_loaded(ui, processes)
        yield ui
    finally:
        for process in processes:
            stop(process)


# -- the MLflow UI on the demo's tracking store -------------------------------------------------
@dataclass
class MlflowUI:
    url: str
    tracking_uri: str
    log: Path


@pytest.fixture(scope="session")
def mlflow_ui(demo_dir: tuple[Path, str]) -> Iterator[MlflowUI]:
    """`mlflow ui` on the demo's SQLite store and artifacts, as `make mlflow-ui` starts it (one
    worker: the machine is small)."""
    root, _ = demo_dir
    state = root / "demo" / "state"
    tracking_uri = f"sqlite:///{state / 'mlflow.db'}"
    port = free_port()
    log = root / "mlflow-ui.log"
    ui = MlflowUI(f"http://127.0.0.1:{port}", tracking_uri, log)
    process = start(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri]
        + ["--default-artifact-root", str(state / "mlartifacts")]
        + ["-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        root,
        log,
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow ui exited early\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{ui.url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow ui was not ready in {SERVER_START_TIMEOUT} s\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(1)
        yield ui
    finally:
        stop(process)
