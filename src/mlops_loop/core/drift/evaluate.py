"""Drift between a reference table and a batch: per-column tests calibrated across features.

A feature counts as drifted only when its change is both significant after Benjamini-Hochberg
false-discovery control across all features and large enough to matter (Kolmogorov-Smirnov
distance for numbers, total-variation distance for categories). Large batches make every
p-value tiny, so the effect threshold is what keeps trivial shifts quiet; many features make some
p-value small by chance, so the FDR control is what keeps false alarms rare.

Every entry also carries `statistics`: all the measures of its kind (normalised Wasserstein,
PSI, Jensen-Shannon, Cramer-von Mises, ...), whichever decided. `DriftPolicy.methods` picks
another deciding method per column; psi, jensen_shannon and wasserstein then decide by their own
threshold, outside the FDR family. See docs/drift.md."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from mlops_loop.core.config import DriftPolicy, LoopConfig
from mlops_loop.core.drift.batched import (
    BATCH_MAX_VALUES,
    batchable,
    many_numeric_measures,
    many_summaries,
)
from mlops_loop.core.drift.measures import (
    NumericMeasures,
    jensen_shannon,
    numeric_measures,
    psi,
    total_variation,
)
from mlops_loop.core.drift.multivariate import MultivariateDrift, domain_classifier_drift
from mlops_loop.core.drift.profile import ReferenceProfile
from mlops_loop.core.drift.report import (
    SCHEMA_VERSION,
    SUMMARY_CATEGORIES,
    DriftReport,
    FeatureDrift,
)
from mlops_loop.core.drift.sides import (
    NULL_LABEL as NULL_LABEL,  # re-exported: part of this module's API
)
from mlops_loop.core.drift.sides import (
    SORTED_KINDS,
    ColumnarBatch,
    FrameTable,
    SourceError,
    Table,
    error_text,
)
from mlops_loop.core.errors import DataError

#: Most categories tested individually; the rest are pooled into one bucket.
MAX_CATEGORIES = 1000
#: Smallest expected count of a category in either frame for it to be tested on its own.
MIN_EXPECTED = 5.0
# Effects are sums of differences of fractions (i/n - j/m); without slack an effect of exactly
# the threshold can land one ulp below it.
_EFFECT_SLACK = 1e-12
_ROLE_ORDER = {"feature": 0, "prediction": 1, "target": 2}


@dataclass(frozen=True)
class _Measured:
    statistics: dict[str, float | None]
    reference_summary: dict
    current_summary: dict


def _statistics(m: NumericMeasures) -> dict[str, float | None]:
    return {
        "ks": m.ks,
        "ks_p_value": m.ks_p_value,
        "wasserstein_norm": m.wasserstein_norm,
        "psi": m.psi,
        "jensen_shannon": m.jensen_shannon,
        "cramer_von_mises": m.cramer_von_mises,
        "cramer_von_mises_p_value": m.cramer_von_mises_p_value,
    }


def _test_categorical(ref: Table, cur: Table, key: Any, kind: str) -> _Measured:
    ref_counts = ref.category_counts(key, "reference")
    cur_counts = cur.category_counts(key, "current batch")
    # The reference's labels, then the batch's new ones (pd.concat's outer join, cheaper).
    new = ~cur_counts.index.isin(ref_counts.index)
    index = ref_counts.index.append(cur_counts.index[new])
    counts = np.zeros((len(index), 2))
    counts[: len(ref_counts), 0] = ref_counts.to_numpy(dtype="float64")
    counts[index.get_indexer(cur_counts.index), 1] = cur_counts.to_numpy(dtype="float64")
    labels = index.to_numpy(dtype=object)
    shares = counts / counts.sum(axis=0)
    top = np.argsort(-shares.max(axis=1), kind="stable")[:SUMMARY_CATEGORIES]
    summaries = [{str(labels[i]): float(shares[i, side]) for i in top} for side in (0, 1)]

    # Pool rare categories: Cochran's rule (expected count >= 5 in every cell) keeps the
    # chi-square approximation honest, and the cap bounds the cost of id-like columns.
    # Choosing by the pooled count keeps the test calibrated, since the homogeneity test
    # conditions on those margins; choosing what the reference alone over-represents would look
    # like drift by itself.
    pooled = counts.sum(axis=1)
    order = np.argsort(-pooled, kind="stable")
    expected = pooled[order] * (counts.sum(axis=0).min() / pooled.sum())
    kept = min(MAX_CATEGORIES, int((expected >= MIN_EXPECTED).sum()))
    if kept < len(order):
        n_ref, n_cur = counts.sum(axis=0)
        rare = _rare_buckets(counts[order[kept:]], n_ref, n_cur)
        counts = np.vstack([counts[order[:kept]], *rare])
    # On the pooled table too: over thousands of sparse categories sampling noise alone would
    # add up to a large distance. PSI and Jensen-Shannon likewise.
    chi2, chi2_p = chi_square(counts)
    statistics: dict[str, float | None] = {
        "chi_square": chi2,
        "chi_square_p_value": chi2_p,
        "total_variation": total_variation(counts[:, 0], counts[:, 1]),
        "psi": psi(counts[:, 0], counts[:, 1]),
        "jensen_shannon": jensen_shannon(counts[:, 0], counts[:, 1]),
    }
    return _Measured(statistics, summaries[0], summaries[1])


def chi_square(counts: np.ndarray) -> tuple[float, float]:
    """`scipy.stats.chi2_contingency(counts.T)`'s statistic and p-value (Yates' correction at
    one degree of freedom), without its per-call overhead, which dominates on wide frames."""
    expected = np.outer(counts.sum(axis=1), counts.sum(axis=0)) / counts.sum()
    dof = (counts.shape[0] - 1) * (counts.shape[1] - 1)
    if dof == 0:
        return 0.0, 1.0
    observed = counts
    if dof == 1:  # Yates: each cell moves half a count towards its expectation
        diff = expected - observed
        observed = observed + np.sign(diff) * np.minimum(0.5, np.abs(diff))
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return statistic, float(special.chdtrc(dof, statistic))


def _rare_buckets(rare: np.ndarray, n_ref: float, n_cur: float) -> list[np.ndarray]:
    """The rare categories' (reference, current) counts pooled into two buckets: values the
    reference holds, and values new to it.

    Pooled together, a batch whose values are all new would fill the bucket the reference's
    rare values filled and look like no change at all. Apart, the new values' mass counts; but
    a batch of the reference's own population brings values a finite reference never saw too
    (a long tail does in every batch). Good-Turing estimates the mass of the reference's unseen
    values as the share of its values seen once: that much of the reference's rare mass, at
    most the batch's new share, moves to the new bucket, so a clean batch's new values meet
    the reference's expectation of them and only an excess counts. With no new value the
    table is the one bucket of old.
    """
    seen = rare[:, 0] > 0
    new = rare[~seen].sum(axis=0)
    if not new[1]:
        return [rare.sum(axis=0)]
    singletons = float(np.sum(rare[:, 0] == 1))
    expected = min(singletons, new[1] * n_ref / n_cur)  # reference counts of unseen values
    held = rare[seen].sum(axis=0) - [expected, 0.0]
    return [b for b in (held, new + [expected, 0.0]) if b.any()]


@dataclass(frozen=True)
class _Column:
    key: Any  # the label in the frames, which need not be a string
    kind: str | None  # None: infer from the reference column; "numerical" may be a datetime
    role: str
    error: str | None = None


def _plan(
    reference: pd.DataFrame | Table, current: pd.DataFrame | Table, config: LoopConfig | None
) -> list[_Column]:
    in_ref, in_cur = set(reference.columns), set(current.columns)
    repeated = {
        *reference.columns[reference.columns.duplicated()],
        *current.columns[current.columns.duplicated()],
    }

    def missing(key: Any) -> str | None:
        if key not in in_ref:
            return "column is missing in the reference"
        if key not in in_cur:
            return "column is missing in the current batch"
        if key in repeated:  # selecting it would give a frame, not a column
            return "column name is not unique"
        return None

    if config is None:
        keys = dict.fromkeys([*reference.columns, *current.columns])
        return [_Column(k, None, "feature", missing(k)) for k in keys]
    cols = config.columns
    plan = [_Column(k, "numerical", "feature", missing(k)) for k in cols.numerical]
    plan += [_Column(k, "categorical", "feature", missing(k)) for k in cols.categorical]
    # Labels and scores are often absent from one side (unlabelled batch, unscored reference).
    plan += [
        _Column(k, None, role)
        for role, k in (("prediction", cols.prediction), ("target", cols.target))
        if k in in_ref and k in in_cur
    ]
    return plan


@dataclass(frozen=True)
class _Decision:
    kind: str | None  # the kind of column it applies to; None: both
    statistic: str  # keys into the measured statistics
    p_value: str | None  # None: decided by the statistic's own threshold, outside the FDR family
    effect: str
    threshold: str  # the DriftPolicy field


DECISIONS: dict[str, _Decision] = {
    "ks": _Decision("numerical", "ks", "ks_p_value", "ks", "numerical_effect"),
    "cramer_von_mises": _Decision(
        "numerical", "cramer_von_mises", "cramer_von_mises_p_value", "ks", "numerical_effect"
    ),
    "wasserstein": _Decision(
        "numerical", "wasserstein_norm", None, "wasserstein_norm", "wasserstein_threshold"
    ),
    "chi_square": _Decision(
        "categorical", "chi_square", "chi_square_p_value", "total_variation", "categorical_effect"
    ),
    "psi": _Decision(None, "psi", None, "psi", "psi_threshold"),
    "jensen_shannon": _Decision(
        None, "jensen_shannon", None, "jensen_shannon", "jensen_shannon_threshold"
    ),
}


def _table(side: pd.DataFrame | Table) -> Table:
    return FrameTable(side) if isinstance(side, pd.DataFrame) else side


@dataclass(frozen=True)
class _Job:
    """A column to test: its entry so far, how it is decided, and its sides' samples."""

    col: _Column
    entry: FeatureDrift
    decision: _Decision
    values: tuple[np.ndarray, np.ndarray] | None = None  # sorted samples, numerical kinds


def _prepare(col: _Column, ref: Table, cur: Table, policy: DriftPolicy) -> _Job:
    """The column's kind and method, and an entry that holds its error when it has one."""
    kind = col.kind
    if kind is None:
        kind = (ref if col.key in ref.columns else cur).inferred_kind(col.key)
    elif kind == "numerical" and col.error is None and ref.inferred_kind(col.key) == "datetime":
        kind = "datetime"  # a configured number that holds dates is compared in time
    numerical = kind in SORTED_KINDS
    method = policy.methods.get(str(col.key)) or ("ks" if numerical else "chi_square")
    decision = DECISIONS[method]
    entry = FeatureDrift(
        name=str(col.key),
        kind=kind,
        role=col.role,
        method=method,
        statistic=None,
        p_value=None,
        effect_size=None,
        threshold=float(getattr(policy, decision.threshold)),
        drifted=False,
        error=col.error,
        reference_summary={},
        current_summary={},
    )
    if col.error is None and decision.kind not in (None, "numerical" if numerical else kind):
        entry = replace(entry, error=f"method {method!r} does not apply to a {kind} column")
    return _Job(col, entry, decision)


def _read(job: _Job, ref: Table, cur: Table) -> _Job | FeatureDrift:
    """A numerical column's sorted samples, or a categorical column's finished entry.

    Numerical columns of a few thousand values are measured later, many at once
    (`many_numeric_measures`); larger ones here, where threads overlap their sorts.
    """
    if job.entry.error is not None:
        return job.entry
    key, kind = job.col.key, job.entry.kind
    try:
        if kind not in SORTED_KINDS:
            return _finish(job, _test_categorical(ref, cur, key, kind), ref, cur)
        a = ref.sorted_values(key, "reference", kind)
        b = cur.sorted_values(key, "current batch", kind)
        if batchable(a, b):
            return replace(job, values=(a, b))
        return _finish(job, numeric_measures(a, b), ref, cur, (a, b))
    except SourceError:  # the data could not be read: no report rather than a wrong one
        raise
    except Exception as e:  # one odd column must not sink the whole report
        return replace(job.entry, error=error_text(e))


def _finish(
    job: _Job,
    measured: _Measured | NumericMeasures,
    ref: Table,
    cur: Table,
    values: tuple[np.ndarray, np.ndarray] | None = None,
    summaries: tuple[dict, dict] | None = None,
) -> FeatureDrift:
    entry, decision = job.entry, job.decision
    if isinstance(measured, NumericMeasures):
        if summaries is None:
            assert values is not None
            key = job.col.key
            summaries = (ref.summary(key, values[0]), cur.summary(key, values[1]))
        measured = _Measured(_statistics(measured), *summaries)
    statistic = measured.statistics[decision.statistic]
    effect = measured.statistics[decision.effect]
    p_value = measured.statistics[decision.p_value] if decision.p_value else None
    if decision.p_value and (p_value is None or not math.isfinite(p_value)):
        return replace(entry, error=f"the test gave no p-value (statistic {statistic})")
    if statistic is None or math.isnan(statistic):
        return replace(entry, error=f"the {entry.method} statistic is undefined")
    return replace(
        entry,
        statistic=statistic,
        p_value=None if p_value is None else min(max(p_value, 0.0), 1.0),
        effect_size=effect,
        reference_summary=measured.reference_summary,
        current_summary=measured.current_summary,
        statistics=measured.statistics,
    )


def _evaluate_columns(
    plan: list[_Column], reference: Table, current: Table, policy: DriftPolicy
) -> list[FeatureDrift]:
    """Every column's entry, in the order of `plan`."""
    jobs = [_prepare(c, reference, current, policy) for c in plan]
    if len(reference) + len(current) <= BATCH_MAX_VALUES:
        # Small columns: the work is Python overhead, which threads would only add to.
        read = [_read(job, reference, current) for job in jobs]
    else:
        # numpy's sorts and searches release the GIL, so the columns' reads and tests overlap
        # across cores; a few workers suffice and bound the memory of the temporary arrays.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            read = list(pool.map(lambda job: _read(job, reference, current), jobs))
    waiting = [(i, r) for i, r in enumerate(read) if isinstance(r, _Job) and r.values]
    pairs = [job.values for _, job in waiting if job.values]
    measured = many_numeric_measures(pairs)
    # Summaries of the same small samples, many at once too: on either side, whatever kind of
    # side it is, so a profile's report stays the frame's.
    summaries = many_summaries([v for pair in pairs for v in pair])
    out = [r if isinstance(r, FeatureDrift) else r.entry for r in read]
    for n, ((i, job), m) in enumerate(zip(waiting, measured, strict=True)):
        try:
            out[i] = _finish(
                job, m, reference, current, summaries=(summaries[2 * n], summaries[2 * n + 1])
            )
        except SourceError:
            raise
        except Exception as e:  # one odd column must not sink the whole report
            out[i] = replace(job.entry, error=error_text(e))
    return out


def evaluate_drift(
    reference: pd.DataFrame | ReferenceProfile,
    current: pd.DataFrame | ColumnarBatch,
    config: LoopConfig | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Test every feature for drift between `reference` and `current` and give a verdict.

    Args:
        reference: The data the model was trained on, or its `ReferenceProfile` (the same
            report, without sorting or counting the reference again).
        current: The batch to judge, or a `ParquetBatch` read one column at a time (see
            `evaluate_drift_parquet`).
        config: Column roles and kinds; without it every common column is a feature whose kind
            is inferred: bool and numeric dtypes are numerical; datetime dtypes and text whose
            every value is an ISO 8601 date are datetime (tested in time, on epoch seconds, as
            a configured numerical column holding dates is too); the rest is categorical.
        policy: Overrides `config.drift`; defaults to `DriftPolicy()`.

    Returns:
        The report; columns that could not be tested carry an `error` and never count as drifted.

    Raises:
        DataError: an input is not of the types above, either side has no rows, no feature
            column is in both frames, a parquet batch cannot be read, or a profile lacks a
            column the plan tests (or holds it as another kind).
    """
    if not isinstance(reference, pd.DataFrame | ReferenceProfile):
        raise DataError(
            "reference must be a pandas DataFrame or a ReferenceProfile, "
            f"got {type(reference).__name__}"
        )
    if not isinstance(current, pd.DataFrame | ColumnarBatch):
        raise DataError(
            f"current must be a pandas DataFrame or a ParquetBatch, got {type(current).__name__}"
        )
    for side, name in ((reference, "reference"), (current, "current batch")):
        if len(side) == 0:
            # Every test would fail on it, and a report of untested columns reads as no drift.
            raise DataError(
                f"the {name} is empty (0 rows); drift needs rows on both sides to compare"
            )
    policy = policy or (config.drift if config is not None else DriftPolicy())
    plan = _plan(reference, current, config)
    if not any(c.role == "feature" and c.error is None for c in plan):
        raise DataError(
            f"no feature column is in both frames; reference has "
            f"{list(reference.columns)}, current has {list(current.columns)}"
        )
    entries = _evaluate_columns(plan, _table(reference), _table(current), policy)

    # Features whose method has a p-value form the FDR family (BH-adjusted p-values);
    # prediction and target are judged alone, and so are methods decided by a threshold only.
    tested = [i for i, e in enumerate(entries) if e.role == "feature" and e.p_value is not None]
    judged = [e.p_value for e in entries]
    if tested:
        adjusted = stats.false_discovery_control([judged[i] for i in tested])
        for i, q in zip(tested, adjusted, strict=True):
            judged[i] = float(q)
    entries = [
        e
        if e.error is not None or e.effect_size is None
        else replace(
            e,
            drifted=(q is None or q <= policy.fdr) and e.effect_size + _EFFECT_SLACK >= e.threshold,
        )
        for e, q in zip(entries, judged, strict=True)
    ]

    evaluated = [e for e in entries if e.role == "feature" and e.error is None]
    n_drifted = sum(e.drifted for e in entries if e.role == "feature")
    n_failed = sum(e.role == "feature" and e.error is not None for e in entries)
    # `entries` is still in the order of `plan` here.
    multivariate = _multivariate(plan, entries, reference, current, policy)
    triggered_by = [
        name
        for name, fired in (
            ("features", n_drifted >= policy.min_drifted_features),
            ("multivariate", multivariate is not None and multivariate.drifted),
        )
        if fired
    ]
    rule = (
        f"{n_drifted} of {len(evaluated)} features drifted (BH FDR {policy.fdr:g} and effect >= "
        f"threshold: KS {policy.numerical_effect:g}, TV {policy.categorical_effect:g}); "
        f"dataset drift needs >= {policy.min_drifted_features}"
    )
    rule += "; " + _multivariate_rule(multivariate, policy)
    rule += "; dataset drift fired by: " + (" and ".join(triggered_by) or "none")
    overridden = [
        f"{e.name}: {e.method}"
        + ("" if e.p_value is not None else f" >= {e.threshold:g} without FDR")
        for e in entries
        if e.error is None and e.method not in ("ks", "chi_square")
    ]
    if overridden:
        rule += "; method overrides: " + ", ".join(overridden)
    absent = sorted(set(policy.methods) - {str(c.key) for c in plan})
    if absent:
        rule += "; overrides for absent columns ignored: " + ", ".join(absent)
    if n_failed:
        rule += f"; {n_failed} feature(s) could not be evaluated"
    # Stable sort: equal effects keep the column order of the config or frame.
    entries.sort(
        key=lambda e: (_ROLE_ORDER[e.role], e.effect_size is None, -(e.effect_size or 0.0))
    )
    return DriftReport(
        schema_version=SCHEMA_VERSION,
        dataset_drift=bool(triggered_by),
        drift_share=n_drifted / len(evaluated) if evaluated else 0.0,
        rule=rule,
        features=entries,
        n_reference=len(reference),
        n_current=len(current),
        multivariate=multivariate,
        triggered_by=triggered_by,
    )


def _multivariate(
    plan: list[_Column],
    entries: list[FeatureDrift],
    reference: Any,
    current: Any,
    policy: DriftPolicy,
) -> MultivariateDrift | None:
    """The domain classifier on every feature that could be tested alone; None when off."""
    if not policy.multivariate:
        return None
    usable = [
        (c.key, e.kind)
        for c, e in zip(plan, entries, strict=True)
        if e.role == "feature" and e.error is None
    ]
    return domain_classifier_drift(
        reference,
        current,
        [k for k, kind in usable if kind in SORTED_KINDS],
        [k for k, kind in usable if kind == "categorical"],
        alpha=policy.multivariate_alpha,
        min_auc=policy.multivariate_min_auc,
        max_rows=policy.multivariate_max_rows,
    )


def _multivariate_rule(result: MultivariateDrift | None, policy: DriftPolicy) -> str:
    if result is None:
        return "multivariate check off"
    if result.error is not None:
        return f"multivariate check not run: {result.error}"
    return (
        f"multivariate: domain-classifier AUC {result.auc:.3f} "
        f"{'>=' if result.drifted else 'below'} {result.threshold:.3f} "
        f"(Mann-Whitney p <= {policy.multivariate_alpha:g} and AUC >= "
        f"{policy.multivariate_min_auc:g}) on {result.n_reference} + {result.n_current} rows"
    )
