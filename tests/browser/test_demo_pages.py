"""What a user finds in the Dagster and MLflow UIs after `mlops-loop demo`: every run under the
code location, its job and its tick; the quarantined batch as a success with its incidents; the
asset graph with nothing failed; the promotion check's history; the registered model and a run
comparison in MLflow.

The demo is shared by the session; these tests only read it (the rollback, which changes it,
lives in test_rollback_launchpad.py, collected after this module). Screenshots go to each
test's tmp_path/screenshots; their paths are printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import LOCATION, DagsterUI, MlflowUI

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

BATCHES = [f"batch_00{i}" for i in range(1, 8)]
QUARANTINED = "batch_003"
RUNS = """
query($filter: RunsFilter) { runsOrError(filter: $filter) { __typename ... on Runs { results {
  runId jobName status
  tags { key value }
  repositoryOrigin { repositoryLocationName }
  stepStats { stepKey status }
  assetMaterializations { assetKey { path } partition }
} } } }
"""
CHECK_EXECUTIONS = """
query($asset: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $asset, checkName: $check, limit: 50) {
    status partition runId
    evaluation { severity description metadataEntries {
      label
      ... on IntMetadataEntry { intValue }
      ... on TableMetadataEntry { table { records } }
    } }
  }
}
"""
ASSET_NODES = """
{ assetNodes {
  assetKey { path }
  isPartitioned
  partitionStats { numMaterialized numFailed numMaterializing numPartitions }
  assetMaterializations(limit: 1) { runId }
} }
"""


class Shots:
    """Screenshots of one test, saved under its tmp_path/screenshots and printed at the end."""

    def __init__(self, page: Page, tmp_path: Path) -> None:
        self.page, self.folder, self.saved = page, tmp_path / "screenshots", list[Path]()

    def take(self, name: str, *, full_page: bool = False) -> Path:
        self.saved.append(self.folder / f"{name}.png")
        self.page.screenshot(path=self.saved[-1], full_page=full_page)
        return self.saved[-1]

    def print(self, capsys: pytest.CaptureFixture[str]) -> None:
        with capsys.disabled():
            print("\nscreenshots:", *(f"  {p}" for p in self.saved), sep="\n")


def runs(ui: DagsterUI, **run_filter: Any) -> list[dict[str, Any]]:
    answer = ui.graphql(RUNS, filter=run_filter or None)["runsOrError"]
    assert answer["__typename"] == "Runs", answer
    return answer["results"]


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def monitor_run(ui: DagsterUI, batch: str) -> dict[str, Any]:
    found = runs(
        ui, pipelineName="monitor_job", tags=[{"key": "dagster/partition", "value": batch}]
    )
    assert len(found) == 1, found
    return found[0]


def metadata(evaluation: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for entry in evaluation["metadataEntries"]:
        if "intValue" in entry:
            values[entry["label"]] = entry["intValue"]
        elif "table" in entry:
            values[entry["label"]] = [json.loads(r) for r in entry["table"]["records"]]
    return values


# -- 1. every run, from the code location, none failed -----------------------------------------
def test_graphql_lists_every_demo_run_from_the_code_location_none_failed(dagster_ui: DagsterUI):
    every = runs(dagster_ui)
    printed = re.search(r"Dagster runs\s*:\s*(\d+)", dagster_ui.demo_output)
    assert printed is not None, dagster_ui.demo_output
    assert len(every) == int(printed.group(1)), [r["jobName"] for r in every]
    assert {r["repositoryOrigin"]["repositoryLocationName"] for r in every} == {LOCATION}
    assert {r["status"] for r in every} == {"SUCCESS"}, [
        (r["jobName"], r["status"]) for r in every if r["status"] != "SUCCESS"
    ]
    # The quarantine included: its monitor run is one of them, and it succeeded.
    monitors = [r for r in every if r["jobName"] == "monitor_job"]
    assert sorted(tags(r)["dagster/partition"] for r in monitors) == BATCHES
    assert monitor_run(dagster_ui, QUARANTINED)["status"] == "SUCCESS"


# -- 2. the job's runs, the sensor's ticks, Overview/Runs ---------------------------------------
def test_monitor_job_runs_landing_sensor_ticks_and_the_runs_overview(
    dagster_ui: DagsterUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    monitors = runs(dagster_ui, pipelineName="monitor_job")
    assert len(monitors) == 7

    page.goto(f"{dagster_ui.url}/locations/{LOCATION}/jobs/monitor_job/runs")
    for run in monitors:  # each run's short id and its partition, launched by the sensor
        expect(page.get_by_role("link", name=f"run {run['runId'][:8]}", exact=True)).to_be_visible()
    partitions = page.get_by_text(re.compile(r"^partition: batch_00\d$"))
    expect(partitions).to_have_count(7)
    assert sorted(partitions.all_inner_texts()) == [f"partition: {b}" for b in BATCHES]
    expect(page.get_by_text("No runs found")).to_have_count(0)
    expect(page.get_by_text("landing_sensor", exact=True)).to_have_count(7)
    shots.take("0-monitor-job-runs")

    # The sensor's page: its ticks, each naming the run it requested.
    page.goto(f"{dagster_ui.url}/locations/{LOCATION}/sensors/landing_sensor")
    expect(page.get_by_text("1 run requested").first).to_be_visible()
    # The tick table is newest first and paged: at least the latest batches' runs are there,
    # each in a tick row that requested it. Waited for row by row: the page's summary row
    # ("Latest tick ... 1 run requested") renders before the tick table loads.
    newest = sorted(monitors, key=lambda r: tags(r)["dagster/partition"])[-3:]
    for run in newest:
        tick = (
            page.locator("tr").filter(has_text="1 run requested").filter(has_text=run["runId"][:8])
        )
        expect(tick.first).to_be_visible()
    expect(page.get_by_text("Failure", exact=True)).to_have_count(0)
    shots.take("1-landing-sensor-ticks")

    page.goto(f"{dagster_ui.url}/runs")
    newest_run = page.get_by_role("link", name=f"run {monitors[0]['runId'][:8]}", exact=True)
    expect(newest_run).to_be_visible()
    expect(page.get_by_text("No runs or scheduled ticks")).to_have_count(0)
    expect(page.get_by_text("Failure", exact=True)).to_have_count(0)
    shots.take("2-runs")

    # Overview's timeline: every job that ran, in a row of its own, and no "No runs or
    # scheduled ticks in this time period".
    page.goto(f"{dagster_ui.url}/overview")
    expect(page.get_by_text("Timeline", exact=True).first).to_be_visible()
    for job in ("bootstrap_job", "monitor_job", "labels_job", "retrain_job"):
        expect(page.get_by_role("link", name=re.compile(rf"\b{job}$"))).to_be_visible()
    expect(page.get_by_text("No runs or scheduled ticks")).to_have_count(0)
    shots.take("3-overview-timeline")
    shots.print(capsys)


# -- 3. the quarantined batch ------------------------------------------------------------------
def test_quarantined_batch_run_succeeds_with_its_incidents_and_later_steps_skipped(
    dagster_ui: DagsterUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    run = monitor_run(dagster_ui, QUARANTINED)
    assert run["status"] == "SUCCESS"
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert "FAILURE" not in steps.values(), steps
    assert steps["monitored_batch"] == "SUCCESS"
    # The steps after the gate: those that read the quality verdict end without an output
    # (nothing materialized), and those that need that output are skipped by Dagster.
    assert steps["model_performance"] == steps["retrain_decision"] == "SKIPPED", steps
    assert {steps["drift_report"], steps["scored_batch"]} <= {"SUCCESS", "SKIPPED"}, steps
    materialized = {
        (m["assetKey"]["path"][-1], m["partition"]) for m in run["assetMaterializations"]
    }
    assert materialized == {("monitored_batch", QUARANTINED)}

    # Its quality_gate check failed (an ERROR-severity verdict), naming its incidents.
    executions = dagster_ui.graphql(
        CHECK_EXECUTIONS, asset={"path": ["monitored_batch"]}, check="quality_gate"
    )["assetCheckExecutions"]
    by_batch = {e["partition"]: e for e in executions}
    assert sorted(by_batch) == BATCHES
    gate = by_batch[QUARANTINED]
    assert (gate["status"], gate["runId"]) == ("FAILED", run["runId"])
    assert gate["evaluation"]["severity"] == "ERROR"
    found = metadata(gate["evaluation"])
    assert found["incidents"] >= 2, found
    kinds = {(r["kind"], r["column"]) for r in found["incident_table"]}
    assert {("null_rate", "age"), ("out_of_range", "income")} <= kinds, kinds
    # Values, not Python reprs: "min=-96498, max=323176, max_share=0.01".
    cells = [r["observed"] + r["expected"] for r in found["incident_table"]]
    assert not any("{" in c or "'" in c for c in cells), cells
    assert all(by_batch[b]["status"] == "SUCCEEDED" for b in BATCHES if b != QUARANTINED)

    # The run page: Success in its header, nothing errored, the failed check and its
    # incidents in the log, the skipped steps, and why they were skipped.
    page.goto(f"{dagster_ui.url}/runs/{run['runId']}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"partition: {QUARANTINED}")).to_be_visible()
    expect(page.get_by_text("No steps have errored")).to_be_visible()
    expect(page.get_by_text("STEP_FAILURE", exact=True)).to_have_count(0)
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
    failed_check = page.get_by_text(
        "Check quality_gate failed for materialization of monitored_batch."
    )
    expect(failed_check).to_be_visible()
    expect(page.get_by_text("null_rate", exact=True).first).to_be_visible()
    expect(page.get_by_text("out_of_range", exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^min=-?\d+, max=\d+, max_share=")).first).to_be_attached()
    expect(page.get_by_text("STEP_SKIPPED", exact=True)).to_have_count(2)
    expect(
        page.get_by_text(f"Batch {QUARANTINED} is quarantined by the quality gate").first
    ).to_be_visible()
    shots.take("0-quarantined-run-top")
    failed_check.scroll_into_view_if_needed()
    shots.take("1-quarantined-run-check")
    page.get_by_text("RUN_SUCCESS", exact=True).scroll_into_view_if_needed()
    shots.take("2-quarantined-run-skipped-steps")
    shots.print(capsys)


# -- 4. the asset graph ------------------------------------------------------------------------
def test_asset_lineage_loads_with_no_asset_failed(
    dagster_ui: DagsterUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    nodes = dagster_ui.graphql(ASSET_NODES)["assetNodes"]
    names = {n["assetKey"]["path"][-1]: n for n in nodes}
    for name, node in names.items():
        if node["isPartitioned"]:
            stats = node["partitionStats"]
            assert stats["numFailed"] == 0 and stats["numMaterializing"] == 0, (name, stats)
            assert stats["numMaterialized"] >= 1, (name, stats)
        else:
            assert node["assetMaterializations"], name  # materialized by the bootstrap
    # Every batch is monitored (the quarantine included); the steps after the gate miss one.
    assert names["monitored_batch"]["partitionStats"]["numMaterialized"] == 7
    assert names["drift_report"]["partitionStats"]["numMaterialized"] == 6

    page.goto(f"{dagster_ui.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_text("monitoring", exact=True).first).to_be_visible()
    expect(page.get_by_text("models", exact=True).first).to_be_visible()
    shots.take("0-global-lineage")
    groups = {
        "monitoring": ["reference_snapshot", "monitored_batch", "drift_report", "scored_batch"],
        "models": ["baseline_model", "retrain_decision", "challenger_model", "champion_model"],
    }
    for index, (group, assets) in enumerate(groups.items(), start=1):
        page.goto(f"{dagster_ui.url}/locations/{LOCATION}/asset-groups/{group}/lineage")
        for asset in assets:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        expect(page.get_by_text("Latest event").first).to_be_visible()
        # A node whose latest materialization failed says "Failed" in its status row.
        expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
        expect(page.get_by_text(re.compile("error", re.IGNORECASE))).to_have_count(0)
        shots.take(f"{index}-lineage-{group}")
    shots.print(capsys)


# -- 5. the promotion check's history ----------------------------------------------------------
def test_champion_model_promotion_check_passes_for_batch_005_and_warns_for_batch_007(
    dagster_ui: DagsterUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    executions = dagster_ui.graphql(
        CHECK_EXECUTIONS, asset={"path": ["champion_model"]}, check="promotion"
    )["assetCheckExecutions"]
    by_batch = {e["partition"]: e for e in executions}
    assert sorted(by_batch) == ["batch_005", "batch_007"]
    promoted, rejected = by_batch["batch_005"], by_batch["batch_007"]
    assert promoted["status"] == "SUCCEEDED"
    assert promoted["evaluation"]["description"].startswith("v2 promoted; champion v2")
    assert (rejected["status"], rejected["evaluation"]["severity"]) == ("FAILED", "WARN")
    assert rejected["evaluation"]["description"].startswith("v3 rejected; champion v2")

    page.goto(f"{dagster_ui.url}/assets/champion_model?view=checks&checkDetail=promotion")
    expect(page.get_by_text("non-blocking", exact=True)).to_be_visible()
    expect(page.get_by_text("v3 rejected; champion v2").first).to_be_visible()
    shots.take("0-promotion-check-latest")
    page.get_by_text("Execution history", exact=True).click()
    rows = page.locator("tr")
    passed = rows.filter(has_text="batch_005")
    warned = rows.filter(has_text="batch_007")
    expect(passed).to_have_count(1)
    expect(warned).to_have_count(1)
    expect(passed).to_contain_text("Passed")
    expect(passed).to_contain_text("v2 promoted")
    # Dagster labels a WARN-severity check that did not pass "Failed", with a warning icon.
    expect(warned).to_contain_text("Failed")
    expect(warned).to_contain_text("v3 rejected")
    shots.take("1-promotion-check-history")

    # The asset's own page: its latest partition's metadata, readable.
    page.goto(f"{dagster_ui.url}/assets/champion_model?view=partitions&partition=batch_005")
    expect(page.get_by_text("promoted", exact=True).first).to_be_visible()
    expect(page.get_by_text("champion_history").first).to_be_visible()
    shots.take("2-champion-model-batch_005", full_page=True)
    shots.print(capsys)


# -- 6. the MLflow UI --------------------------------------------------------------------------
def test_mlflow_registered_model_page_shows_versions_champion_and_history(
    mlflow_ui: MlflowUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    # Both URIs: a registry URI another test left in this process must not be used instead.
    uri = mlflow_ui.tracking_uri
    model = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model("churn-model")
    champion = int(model.aliases["champion"])
    assert champion == 2

    page.goto(f"{mlflow_ui.url}/#/models/churn-model")
    expect(page.get_by_role("heading", name="churn-model")).to_be_visible()
    # The description: the champion and its history (the alias keeps none of its own).
    expect(page.get_by_text("Champion history, newest first:")).to_be_visible()
    expect(page.get_by_text("Latest challenger: v3")).to_be_visible()  # the rejected one
    expect(page.get_by_role("row").filter(has_text="promotion v1 → v2")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="bootstrap v1")).to_have_count(1)
    versions = page.get_by_role("row").filter(has_text=re.compile(r"^Version \d"))
    expect(versions).to_have_count(3)
    for row in versions.all():
        number = int(re.match(r"Version (\d)", row.inner_text()).group(1))  # type: ignore[union-attr]
        if number == champion:
            expect(row).to_contain_text("champion")
        else:
            assert "@ champion" not in row.inner_text(), row.inner_text()
    shots.take("0-registered-model")
    versions.first.scroll_into_view_if_needed()
    shots.take("1-registered-model-versions")
    shots.print(capsys)


def test_mlflow_compares_two_monitor_runs_with_shared_metrics_and_artifacts(
    mlflow_ui: MlflowUI, page: Page, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    shots = Shots(page, tmp_path)
    client = MlflowClient(tracking_uri=mlflow_ui.tracking_uri, registry_uri=mlflow_ui.tracking_uri)
    experiment = client.get_experiment_by_name("churn-demo")
    assert experiment is not None
    found = client.search_runs(
        [experiment.experiment_id], "attributes.run_name LIKE 'monitor batch_00%'"
    )
    by_name = {r.info.run_name: r for r in found}
    assert sorted(by_name) == [f"monitor {b}" for b in BATCHES]
    pair = [by_name["monitor batch_006"], by_name["monitor batch_007"]]
    shared = set(pair[0].data.metrics) & set(pair[1].data.metrics)
    assert {"drift_share", "batch_rows", "champion_version"} <= shared

    def files(run_id: str, path: str | None = None) -> set[str]:
        out: set[str] = set()
        for item in client.list_artifacts(run_id, path):
            out |= files(run_id, item.path) if item.is_dir else {item.path}
        return out

    paths = [files(r.info.run_id) for r in pair]
    # Stable names: each batch's reports sit at the same paths, so two runs line up.
    assert paths[0] == paths[1] and {"drift/report.html", "quality/report.html"} <= paths[0]

    ids = json.dumps([r.info.run_id for r in pair])
    page.goto(
        f"{mlflow_ui.url}/#/compare-runs?runs={ids}"
        f"&experiments={json.dumps([experiment.experiment_id])}"
    )
    expect(page.get_by_text("Comparing 2 Runs from 1 Experiment")).to_be_visible()
    expect(page.get_by_text("monitor batch_006", exact=True)).to_be_visible()
    expect(page.get_by_text("monitor batch_007", exact=True)).to_be_visible()
    metric = page.get_by_text("drift_share", exact=True).first
    expect(metric).to_be_visible()
    shots.take("0-compare-runs")
    # The metrics' names scroll apart from their values: bring the section in, not one name.
    page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
    shots.take("1-compare-runs-metrics")

    # MLflow's comparison lists only the files at the root of both runs' artifacts, and the
    # loop files each report in a folder of its step: the folders are compared on the runs'
    # own pages, where they are the same.
    for index, run in enumerate(pair, start=2):
        page.goto(
            f"{mlflow_ui.url}/#/experiments/{experiment.experiment_id}/runs/"
            f"{run.info.run_id}/artifacts"
        )
        for folder in ("drift", "operations", "performance", "quality"):
            expect(page.get_by_text(folder, exact=True).first).to_be_visible()
        shots.take(f"{index}-artifacts-{run.info.run_name.replace(' ', '-')}")
    shots.print(capsys)
