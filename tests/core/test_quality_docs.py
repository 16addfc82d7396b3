"""The Data Docs page the quality gate logs to MLflow reads offline: no CDN, no dead links.

Real steps (snapshot, ingest, `check_quality`) on the demo stream, with MLflow on SQLite in a
temp dir; the page is read back from the run's artifacts.
"""

from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_loop.core.config import load_config
from mlops_loop.core.steps.ingest import ingest_batch
from mlops_loop.core.steps.quality import check_quality
from mlops_loop.core.steps.reference import take_reference_snapshot
from tests.conftest import write_loop

PASSING, FAILING = "batch_001", "batch_003"  # batch_003: income in cents, half the ages lost


class _Page(HTMLParser):
    """Every tag and attribute of a page; fails on markup html.parser cannot make sense of."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def pages(tmp_path_factory, demo_frames) -> dict[str, str]:
    """The logged `quality/data_docs.html` of a passing and a failing demo batch."""
    root = tmp_path_factory.mktemp("docs")
    reference, batches = demo_frames
    config = load_config(write_loop(root, reference, {k: batches[k] for k in (PASSING, FAILING)}))
    take_reference_snapshot(config)
    for key in (PASSING, FAILING):
        ingest_batch(config, key, config.sources.landing / f"{key}.parquet")
        check_quality(config, key)
    client = MlflowClient(tracking_uri=config.tracking_uri)
    exp = client.get_experiment_by_name(config.mlflow.experiment)
    found = {}
    for run in client.search_runs([exp.experiment_id]):
        names = {a.path for a in client.list_artifacts(run.info.run_id, "quality")}
        if "quality/data_docs.html" in names:
            local = client.download_artifacts(run.info.run_id, "quality/data_docs.html", str(root))
            page = Path(local).read_text()
            found[PASSING if f"{PASSING}<" in page else FAILING] = page
    assert set(found) == {PASSING, FAILING}, sorted(found)
    return found


@pytest.mark.parametrize("key", [PASSING, FAILING])
def test_logged_data_docs_page_needs_no_network_and_no_other_file(pages, key):
    page = pages[key]
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert {"html", "head", "style", "body", "table"} <= set(parsed.tags)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert parsed.refs == [], parsed.refs  # nothing to fetch, no link to a page never logged
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page  # no font or image from elsewhere
    assert key in page and "UTC" in page  # the batch and when it was judged


def test_failing_page_names_the_failed_check_first_with_what_was_seen(pages):
    page = pages[FAILING]
    assert "Data quality FAILED" in page
    rows = page.split("<tbody>", 1)[1].split("<tr ")[1:]
    failed = [r for r in rows if r.startswith('class="failed')]
    assert failed and rows[: len(failed)] == failed  # failed checks lead
    income = next(r for r in failed if ">income<" in r and "out of range" in r)
    assert "expect_column_values_to_be_between" in income
    assert "values unexpected" in income and "between" in income  # observed vs expected
    age = next(r for r in failed if ">age<" in r)  # half the ages lost
    assert "null rate" in age and "values null (49" in age and "not null" in age


def test_passing_page_lists_every_check_as_passed(pages):
    page = pages[PASSING]
    assert "Data quality PASSED" in page
    rows = page.split("<tbody>", 1)[1].split("<tr ")[1:]
    assert len(rows) > 10 and all(r.startswith('class="passed') for r in rows)
    assert "0 failed" in page
