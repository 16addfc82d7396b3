"""Drift between a reference table and a batch: per-column tests calibrated across features.

A feature counts as drifted only when its change is both significant after Benjamini-Hochberg
false-discovery control across all features and large enough to matter (Kolmogorov-Smirnov
distance for numbers, total-variation distance for categories). Large batches make every
p-value tiny, so the effect threshold is what keeps trivial shifts quiet; many features make some
p-value small by chance, so the FDR control is what keeps false alarms rare.
"""

from __future__ import annotations

import html
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mlops_loop.core.config import DriftPolicy, LoopConfig
from mlops_loop.core.errors import DataError

SCHEMA_VERSION = "1"
#: Most categories tested individually; the rest are pooled into one bucket.
MAX_CATEGORIES = 1000
#: Smallest expected count of a category in either frame for it to be tested on its own.
MIN_EXPECTED = 5.0
#: Categories kept in a summary (the ones with the largest share on either side).
SUMMARY_CATEGORIES = 20
NULL_LABEL = "<null>"
_LEVELS = np.linspace(0.0, 1.0, 11)
# Effects are sums of differences of fractions (i/n - j/m); without slack an effect of exactly
# the threshold can land one ulp below it.
_EFFECT_SLACK = 1e-12
_ROLE_ORDER = {"feature": 0, "prediction": 1, "target": 2}


def _clean(value: Any) -> Any:
    """Turn numpy scalars into Python ones and NaN/inf into None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class FeatureDrift:
    """The drift test of one column."""

    name: str
    kind: str
    role: str
    method: str
    statistic: float | None
    p_value: float | None
    effect_size: float | None
    threshold: float
    drifted: bool
    error: str | None
    reference_summary: dict
    current_summary: dict

    def to_dict(self) -> dict:
        """A JSON-serialisable mapping of every field; NaN and infinities become None."""
        return {f.name: _clean(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift tests and the dataset verdict."""

    schema_version: str
    dataset_drift: bool
    drift_share: float
    rule: str
    features: list[FeatureDrift]
    n_reference: int
    n_current: int

    def to_dict(self) -> dict:
        """A JSON-serialisable mapping; NaN and infinities become None."""
        return {
            "schema_version": self.schema_version,
            "dataset_drift": self.dataset_drift,
            "drift_share": _clean(self.drift_share),
            "rule": self.rule,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "features": [f.to_dict() for f in self.features],
        }

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted columns with role "feature"."""
        return [f.name for f in self.features if f.role == "feature" and f.drifted]

    @property
    def max_effect(self) -> float:
        """The largest effect size among features, 0.0 when none could be evaluated."""
        effects = [
            f.effect_size
            for f in self.features
            if f.role == "feature" and f.effect_size is not None
        ]
        return max(effects, default=0.0)

    def to_markdown(self) -> str:
        """A compact verdict and table, e.g. for Dagster metadata."""
        lines = [
            f"**Dataset drift: {'yes' if self.dataset_drift else 'no'}** - {self.rule}",
            "",
            "| column | role | kind | effect | threshold | p-value | drifted |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in self.features:
            verdict = f"error: {f.error}" if f.error else ("**yes**" if f.drifted else "no")
            cells = [
                f.name,
                f.role,
                f.kind,
                _fmt(f.effect_size),
                _fmt(f.threshold),
                _fmt(f.p_value, p=True),
                verdict,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def to_html(self) -> str:
        """A self-contained HTML page: the verdict first, then one section per column."""
        return _render_html(self)


class _Unusable(Exception):
    """A column that cannot be tested; the message goes into the entry's `error`."""


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series)


def _finite(series: pd.Series, side: str) -> np.ndarray:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise _Unusable(f"all values are null (or non-finite) in the {side}")
    return values


def _numeric_summary(values: np.ndarray) -> dict:
    # Sums of huge values may overflow; `to_dict` turns the resulting infinities into None.
    with np.errstate(over="ignore", invalid="ignore"):
        return {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "quantiles": [float(v) for v in np.quantile(values, _LEVELS)],
        }


def _test_numerical(ref: pd.Series, cur: pd.Series) -> tuple:
    a, b = _finite(ref, "reference"), _finite(cur, "current batch")
    result = stats.ks_2samp(a, b)
    statistic = float(result.statistic)
    return (statistic, float(result.pvalue), statistic, _numeric_summary(a), _numeric_summary(b))


def _category_counts(series: pd.Series, side: str) -> pd.Series:
    if not series.notna().any():
        raise _Unusable(f"all values are null in the {side}")
    try:
        counts = series.value_counts(dropna=False, sort=False)
    except TypeError:  # unhashable cells (lists, dicts) in object columns
        counts = series.map(str, na_action="ignore").value_counts(dropna=False, sort=False)
    counts = counts[counts > 0]  # a categorical dtype also lists its unused categories
    # Counting first and stringifying only the distinct values is much cheaper than casting
    # every cell; mixed types that print alike (1 and "1") merge here, as in a CSV round trip.
    labels = np.where(counts.index.isna(), NULL_LABEL, counts.index.astype(str))
    return counts.groupby(labels, sort=False).sum()


def _test_categorical(ref: pd.Series, cur: pd.Series) -> tuple:
    table = pd.concat(
        [_category_counts(ref, "reference"), _category_counts(cur, "current batch")], axis=1
    ).fillna(0)
    counts = table.to_numpy(dtype="float64")
    labels = table.index.to_numpy(dtype=object)
    shares = counts / counts.sum(axis=0)
    top = np.argsort(-shares.max(axis=1), kind="stable")[:SUMMARY_CATEGORIES]
    summaries = [{str(labels[i]): float(shares[i, side]) for i in top} for side in (0, 1)]

    # Pool rare categories into one bucket: Cochran's rule (expected count >= 5 in every cell)
    # keeps the chi-square approximation honest, and the cap bounds the cost of id-like columns.
    # Choosing by the pooled count keeps the test calibrated, since the homogeneity test
    # conditions on those margins; choosing what the reference alone over-represents would look
    # like drift by itself.
    pooled = counts.sum(axis=1)
    order = np.argsort(-pooled, kind="stable")
    expected = pooled[order] * (counts.sum(axis=0).min() / pooled.sum())
    kept = min(MAX_CATEGORIES, int((expected >= MIN_EXPECTED).sum()))
    if kept < len(order) - 1:
        counts = np.vstack([counts[order[:kept]], counts[order[kept:]].sum(axis=0)])
        shares = counts / counts.sum(axis=0)
    # On the pooled table too: over thousands of sparse categories sampling noise alone would
    # add up to a large distance.
    tv = float(0.5 * np.abs(shares[:, 0] - shares[:, 1]).sum())
    chi2 = stats.chi2_contingency(counts.T)
    return float(chi2.statistic), float(chi2.pvalue), tv, summaries[0], summaries[1]


@dataclass(frozen=True)
class _Column:
    key: Any  # the label in the frames, which need not be a string
    kind: str | None  # None: infer from the reference column
    role: str
    error: str | None = None


def _plan(
    reference: pd.DataFrame, current: pd.DataFrame, config: LoopConfig | None
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


def _evaluate_column(
    col: _Column, reference: pd.DataFrame, current: pd.DataFrame, policy: DriftPolicy
) -> FeatureDrift:
    kind = col.kind
    if kind is None:
        frame = reference if col.key in reference.columns else current
        column = frame.loc[:, col.key]
        kind = "numerical" if column.ndim == 1 and _is_numeric(column) else "categorical"
    numerical = kind == "numerical"
    entry = FeatureDrift(
        name=str(col.key),
        kind=kind,
        role=col.role,
        method="ks" if numerical else "chi_square",
        statistic=None,
        p_value=None,
        effect_size=None,
        threshold=policy.numerical_effect if numerical else policy.categorical_effect,
        drifted=False,
        error=col.error,
        reference_summary={},
        current_summary={},
    )
    if col.error:
        return entry
    try:
        test = _test_numerical if numerical else _test_categorical
        statistic, p_value, effect, ref_summary, cur_summary = test(
            reference[col.key], current[col.key]
        )
    except Exception as e:  # one odd column must not sink the whole report
        return replace(entry, error=str(e) or type(e).__name__)
    if not math.isfinite(p_value):
        return replace(entry, error=f"the test gave no p-value (statistic {statistic})")
    return replace(
        entry,
        statistic=statistic,
        p_value=min(max(p_value, 0.0), 1.0),
        effect_size=effect,
        reference_summary=ref_summary,
        current_summary=cur_summary,
    )


def evaluate_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: LoopConfig | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Test every feature for drift between `reference` and `current` and give a verdict.

    Args:
        reference: The data the model was trained on.
        current: The batch to judge.
        config: Column roles and kinds; without it every common column is a feature whose kind
            is inferred (bool and numeric dtypes are numerical, the rest categorical).
        policy: Overrides `config.drift`; defaults to `DriftPolicy()`.

    Returns:
        The report; columns that could not be tested carry an `error` and never count as drifted.

    Raises:
        DataError: an input is not a DataFrame, or no feature column is in both frames.
    """
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{side} must be a pandas DataFrame, got {type(frame).__name__}")
    policy = policy or (config.drift if config is not None else DriftPolicy())
    plan = _plan(reference, current, config)
    if not any(c.role == "feature" and c.error is None for c in plan):
        raise DataError(
            f"no feature column is in both frames; reference has "
            f"{list(reference.columns)}, current has {list(current.columns)}"
        )
    # numpy's sorts and searches release the GIL, so the columns' tests overlap across cores;
    # a few workers suffice and bound the memory of the temporary arrays.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        entries = list(pool.map(lambda c: _evaluate_column(c, reference, current, policy), plan))

    # Features form the FDR family (BH-adjusted p-values); prediction and target are judged alone.
    tested = [i for i, e in enumerate(entries) if e.role == "feature" and e.p_value is not None]
    judged = [e.p_value for e in entries]
    if tested:
        adjusted = stats.false_discovery_control([judged[i] for i in tested])
        for i, q in zip(tested, adjusted, strict=True):
            judged[i] = float(q)
    entries = [
        e
        if q is None
        else replace(
            e,
            drifted=q <= policy.fdr and (e.effect_size or 0.0) + _EFFECT_SLACK >= e.threshold,
        )
        for e, q in zip(entries, judged, strict=True)
    ]

    n_drifted = sum(e.drifted for e in entries if e.role == "feature")
    n_failed = sum(e.role == "feature" and e.error is not None for e in entries)
    rule = (
        f"{n_drifted} of {len(tested)} features drifted (BH FDR {policy.fdr:g} and effect >= "
        f"threshold: KS {policy.numerical_effect:g}, TV {policy.categorical_effect:g}); "
        f"dataset drift needs >= {policy.min_drifted_features}"
    )
    if n_failed:
        rule += f"; {n_failed} feature(s) could not be evaluated"
    # Stable sort: equal effects keep the column order of the config or frame.
    entries.sort(
        key=lambda e: (_ROLE_ORDER[e.role], e.effect_size is None, -(e.effect_size or 0.0))
    )
    return DriftReport(
        schema_version=SCHEMA_VERSION,
        dataset_drift=n_drifted >= policy.min_drifted_features,
        drift_share=n_drifted / len(tested) if tested else 0.0,
        rule=rule,
        features=entries,
        n_reference=len(reference),
        n_current=len(current),
    )


# ---------------------------------------------------------------------------- rendering


def _fmt(value: float | None, p: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if p else f"{value:.3f}"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:60em;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.1em;margin:0 0 .3em}
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #e3e3e3;
text-align:left}
.yes{color:#b00020;font-weight:600}.no{color:#1b5e20}.err{color:#8a6d3b}
.verdict{font-size:1.2em;padding:.5em 1em;border-radius:4px;background:#f3f3f3}
section{border-top:1px solid #ccc;padding:.8em 0}svg text{font:10px sans-serif;fill:#555}
.key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
"""


# Reference, current. Fills are attributes, not CSS classes, so a plot copied out keeps them.
_COLORS = ("#1f77b4", "#ff7f0e")


def _numeric_svg(ref: dict, cur: dict) -> str:
    """Side-by-side histograms read off the deciles, taking each CDF as linear between them."""
    quantiles = [np.asarray(s.get("quantiles") or [], dtype="float64") for s in (ref, cur)]
    if any(q.size != len(_LEVELS) or not np.isfinite(q).all() for q in quantiles):
        return ""
    lo, hi = min(q[0] for q in quantiles), max(q[-1] for q in quantiles)
    if not hi > lo:  # constant columns: centre the spike in a unit-wide frame
        lo, hi = lo - 0.5, hi + 0.5
    if not math.isfinite(hi - lo):
        return ""
    bins, width, height = 25, 420.0, 110.0  # an odd count puts a constant's spike mid-bin
    edges = np.linspace(lo, hi, bins + 1)
    masses = []
    for q in quantiles:
        cdf = np.interp(edges, q, _LEVELS, left=0.0, right=1.0)
        # With repeated deciles (a point mass at the minimum) interp may start above 0.
        cdf[0], cdf[-1] = 0.0, 1.0
        masses.append(np.diff(cdf))
    top = max(float(m.max()) for m in masses) or 1.0
    step = width / bins
    parts = []
    for j, (color, mass) in enumerate(zip(_COLORS, masses, strict=True)):
        for i, m in enumerate(mass):
            h = m / top * height
            if h >= 0.05:
                parts.append(
                    f'<rect fill="{color}" x="{i * step + j * step / 2:.1f}" '
                    f'y="{height - h:.1f}" width="{step / 2 - 0.5:.1f}" '
                    f'height="{h:.1f}"/>'
                )
    parts.append(
        f'<text x="0" y="{height + 12:.0f}">{lo:.4g}</text>'
        f'<text x="{width:.0f}" y="{height + 12:.0f}" text-anchor="end">{hi:.4g}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height + 16:.0f}">{"".join(parts)}</svg>'
    )


def _categorical_svg(ref: dict, cur: dict) -> str:
    """Side-by-side bars of category shares, reference above current."""
    labels = list(dict.fromkeys([*ref, *cur]))[:SUMMARY_CATEGORIES]
    if not labels:
        return ""
    shares = [[float(s.get(k) or 0.0) for k in labels] for s in (ref, cur)]
    top = max(max(row) for row in shares) or 1.0
    label_w, bar_w, row_h = 150, 270, 16
    parts = []
    for i, label in enumerate(labels):
        y = i * row_h
        short = label if len(label) <= 24 else label[:23] + "\u2026"
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end">{html.escape(short)}</text>'
        )
        for j, color in enumerate(_COLORS):
            value = shares[j][i]
            parts.append(
                f'<rect fill="{color}" x="{label_w}" y="{y + 1 + j * 7}" '
                f'width="{value / top * bar_w:.1f}" height="6"/>'
            )
        parts.append(
            f'<text x="{label_w + bar_w + 4}" y="{y + 11}">'
            f"{shares[0][i]:.1%} / {shares[1][i]:.1%}</text>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
        f'height="{len(labels) * row_h + 4}">{"".join(parts)}</svg>'
    )


def _render_html(report: DriftReport) -> str:
    esc = html.escape
    verdict = "Dataset drift detected" if report.dataset_drift else "No dataset drift"
    rows, sections = [], []
    for i, f in enumerate(report.features):
        state = ("err", "error") if f.error else (("yes", "drifted") if f.drifted else ("no", "ok"))
        rows.append(
            f'<tr><td><a href="#c{i}">{esc(f.name)}</a></td><td>{f.role}</td>'
            f"<td>{f.kind}</td><td>{_fmt(f.effect_size)}</td><td>{_fmt(f.threshold)}</td>"
            f'<td>{_fmt(f.p_value, p=True)}</td><td class="{state[0]}">{state[1]}</td>'
            "</tr>"
        )
        if f.error:
            body = f'<p class="err">Not evaluated: {esc(f.error)}</p>'
        else:
            plot = (_numeric_svg if f.kind == "numerical" else _categorical_svg)(
                f.reference_summary, f.current_summary
            )
            effect_name = "KS distance" if f.method == "ks" else "total variation distance"
            body = (
                f"<p>{f.method} statistic {_fmt(f.statistic)}, p-value "
                f"{_fmt(f.p_value, p=True)}, {effect_name} {_fmt(f.effect_size)} "
                f"(threshold {_fmt(f.threshold)})</p>{plot}"
            )
        sections.append(
            f'<section id="c{i}"><h2>{esc(f.name)} <small class="{state[0]}">'
            f"{state[1]}</small></h2>{body}</section>"
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drift report</title><style>{_CSS}</style></head><body>"
        f"<h1>Drift report</h1>"
        f'<p class="verdict {"yes" if report.dataset_drift else "no"}">{verdict}</p>'
        f"<p>{esc(report.rule)}</p>"
        f"<table><tr><th>drift share</th><td>{report.drift_share:.1%}</td></tr>"
        f"<tr><th>reference rows</th><td>{report.n_reference}</td></tr>"
        f"<tr><th>current rows</th><td>{report.n_current}</td></tr>"
        f"<tr><th>schema</th><td>{report.schema_version}</td></tr></table>"
        f'<p><span class="key" style="background:{_COLORS[0]}"></span>reference'
        f'<span class="key" style="background:{_COLORS[1]}"></span>current</p>'
        f"<table><tr><th>column</th><th>role</th><th>kind</th><th>effect</th><th>threshold</th>"
        f"<th>p-value</th><th>verdict</th></tr>{''.join(rows)}</table>"
        f"{''.join(sections)}</body></html>"
    )
