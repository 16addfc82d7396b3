"""Roll the champion back from the Dagster UI, as an operator would: open rollback_job's
Launchpad in a real browser, type the run config, click Launch Run, watch the run succeed.

Screenshots go to the test's tmp_path/screenshots; their paths are printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.registry import MlflowRegistry
from tests.browser.conftest import LOCATION, DagsterUI

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

RUN_TIMEOUT = 120.0  # seconds from Launch Run to a finished run
REASON = "the champion misbehaves in region west (rolled back from the Launchpad)"
RUN_CONFIG = f"""\
ops:
  rollback_champion:
    config:
      to: previous
      reason: "{REASON}"
"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
LATEST_CHAMPION = """
{ assetOrError(assetKey: {path: ["champion_model"]}) { ... on Asset {
  assetMaterializations(limit: 1) { partition runId metadataEntries {
    label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text }
  } }
} } }
"""


def wait_for_run(ui: DagsterUI, run_id: str) -> str:
    """The run's final status, polled from the webserver's GraphQL API."""
    deadline = time.monotonic() + RUN_TIMEOUT
    status = "unknown"
    while time.monotonic() < deadline:
        run = ui.graphql(RUN_STATUS, id=run_id)["runOrError"]
        status = run.get("status", run["__typename"])
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    pytest.fail(f"run {run_id} still {status} after {RUN_TIMEOUT} s\n{ui.log_tails()}")


def test_rollback_launched_from_the_launchpad_moves_the_champion_back(
    dagster_ui: DagsterUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from playwright.sync_api import expect

    registry = MlflowRegistry.from_config(load_config(dagster_ui.config_path))
    champion, previous = registry.champion(), registry.previous_champion()
    history = registry.history()
    assert previous is not None and previous != champion, (champion, previous)
    shots = tmp_path / "screenshots"
    saved: list[Path] = []

    def screenshot(name: str) -> None:
        saved.append(shots / f"{name}.png")
        page.screenshot(path=saved[-1])

    # The job's Launchpad opens with a valid default config whose reason is a prompt to replace
    # (a run launched with it fails, saying so): no config error to puzzle over.
    page.goto(f"{dagster_ui.url}/locations/{LOCATION}/jobs/rollback_job/playground")
    editor = page.locator(".CodeMirror").first
    expect(editor).to_contain_text("rollback_champion")
    expect(editor).to_contain_text("REPLACE ME")
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    screenshot("0-launchpad-default")

    # Replace the config with ours. insert_text types it like a paste: the editor's
    # auto-indent would otherwise add to the indentation of each new line.
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(RUN_CONFIG)
    typed = page.evaluate("document.querySelector('.CodeMirror').CodeMirror.getValue()")
    assert typed.strip() == RUN_CONFIG.strip()
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    expect(editor).to_contain_text(REASON)
    screenshot("1-launchpad-config-filled")

    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert wait_for_run(dagster_ui, run_id) == "SUCCESS", dagster_ui.log_tails()

    # The run page shows it: RUN_SUCCESS in its log, Success in its header. The header's badge
    # can lag the log by a poll on a busy machine (seen: "Started" beside RUN_SUCCESS), so a
    # page opened now, as a user coming back to it would, must say Success.
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible(timeout=30_000)
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible(timeout=30_000)
    screenshot("2-run-success")

    # champion_model's latest event is the rollback's, at the latest batch: the asset shows
    # the champion that serves, in its metadata and on its page.
    latest = dagster_ui.graphql(LATEST_CHAMPION)["assetOrError"]["assetMaterializations"][0]
    assert (latest["runId"], latest["partition"]) == (run_id, "batch_007")
    meta = {m["label"]: m.get("intValue", m.get("text")) for m in latest["metadataEntries"]}
    assert meta["outcome"] == "rolled_back"
    assert (meta["champion_version"], meta["from_version"]) == (previous, champion)
    assert meta["reason"] == REASON
    page.goto(f"{dagster_ui.url}/assets/champion_model?view=partitions&partition=batch_007")
    expect(page.get_by_text("rolled_back", exact=True).first).to_be_visible()
    expect(page.get_by_text(REASON).first).to_be_visible()
    screenshot("3-champion-model-rolled-back")
    with capsys.disabled():
        print("\nscreenshots:", *(f"  {p}" for p in saved), sep="\n")

    # `mlops-loop status` says so too.
    status = subprocess.run(
        [sys.executable, "-m", "mlops_loop.cli", "status", "--config", str(dagster_ui.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert f"champion   : v{previous} " in status.stdout, status.stdout
    assert "rollback" in status.stdout and REASON in status.stdout, status.stdout

    # MLflow: the alias is back on the previous champion, and the history says who and why.
    assert registry.champion() == previous
    new = registry.history()[len(history) :]
    assert len(new) == 1, new
    change = new[0]
    assert change["action"] == "rollback"
    assert (change["from_version"], change["to_version"]) == (champion, previous)
    assert change["reason"] == REASON
    assert f"dagster run {run_id[:8]}" in change["triggered_by"]
    assert "rollback_job" in change["triggered_by"]
