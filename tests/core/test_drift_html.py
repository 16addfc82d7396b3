"""The drift report's page says what it compares and when, and an unlabelled target is not an
error."""

import numpy as np
import pandas as pd

from mlops_loop.core.drift import evaluate_drift


def test_the_page_names_batch_reference_and_time_and_waits_for_labels(loop_config):
    cols = loop_config.columns
    rng = np.random.default_rng(3)
    n = 600
    ref = pd.DataFrame({c: rng.normal(0, 1, n) for c in cols.numerical})
    for c in cols.categorical:
        ref[c] = rng.choice(["a", "b", "c"], n)
    ref[cols.target] = rng.integers(0, 2, n)
    cur = ref.sample(frac=1, random_state=1).reset_index(drop=True)
    cur[cols.target] = np.nan  # labels land later
    report = evaluate_drift(ref, cur, config=loop_config)
    [target] = [f for f in report.features if f.role == "target"]
    assert target.error and "all values are null" in target.error
    page = report.to_html(
        batch="batch_004", reference="reference.parquet", at="2026-03-01 10:00 UTC"
    )
    assert "<title>Drift report: batch_004</title>" in page
    assert "Batch <b>batch_004</b> against the reference <b>reference.parquet</b>" in page
    assert "computed 2026-03-01 10:00 UTC" in page
    assert "drawn from each side's deciles" in page  # says what the histograms are
    assert '<td class="na">no labels yet</td>' in page
    assert "No labels yet" in page
    assert '<td class="err">error</td>' not in page


def test_an_unlabelled_target_is_no_labels_yet_in_markdown_and_not_counted(loop_config):
    """The Dagster metadata (Markdown) says what the page says; a real error stays an error."""
    cols = loop_config.columns
    rng = np.random.default_rng(4)
    n = 400
    ref = pd.DataFrame({c: rng.normal(0, 1, n) for c in cols.numerical})
    for c in cols.categorical:
        ref[c] = rng.choice(["a", "b", "c"], n)
    ref[cols.target] = rng.integers(0, 2, n)
    cur = ref.sample(frac=1, random_state=2).reset_index(drop=True)
    cur[cols.target] = np.nan  # the batch landed before its labels
    broken = cols.numerical[0]
    cur[broken] = np.nan  # a feature with no values is an error, labels or not
    report = evaluate_drift(ref, cur, config=loop_config)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in report.to_markdown().splitlines()}
    assert lines[cols.target].endswith("| no labels yet |")
    assert "error" not in lines[cols.target]
    assert "| error: all values are null" in lines[broken]
    assert not report.dataset_drift and cols.target not in report.drifted_features
    page = report.to_html(batch="b")
    assert '<td class="na">no labels yet</td>' in page and '<td class="err">error</td>' in page
