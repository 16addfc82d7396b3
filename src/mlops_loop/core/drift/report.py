"""The drift report: per-column entries, the dataset verdict, and their JSON, Markdown and HTML."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from mlops_loop.core.drift.jsonable import clean

if TYPE_CHECKING:
    from mlops_loop.core.drift.multivariate import MultivariateDrift

#: Version 2 added `multivariate` and `triggered_by`.
SCHEMA_VERSION = "2"
#: Categories kept in a summary (the ones with the largest share on either side).
SUMMARY_CATEGORIES = 20
#: Levels of the quantiles kept in a numerical summary (the deciles).
LEVELS = np.linspace(0.0, 1.0, 11)
_LEVELS = LEVELS


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
    #: Every measure computed for the column (see docs/drift.md), whatever decided it.
    statistics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-serialisable mapping of every field; NaN and infinities become None."""
        return {f.name: clean(getattr(self, f.name)) for f in fields(self)}


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
    #: The domain classifier's verdict on the features jointly; None when the policy turns it off.
    multivariate: MultivariateDrift | None = None
    #: What made dataset drift: "features" (enough features drifted) and/or "multivariate".
    triggered_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable mapping; NaN and infinities become None."""
        return {
            "schema_version": self.schema_version,
            "dataset_drift": self.dataset_drift,
            "triggered_by": list(self.triggered_by),
            "drift_share": clean(self.drift_share),
            "rule": self.rule,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
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
        fired = f" (fired by {' and '.join(self.triggered_by)})" if self.triggered_by else ""
        lines = [
            f"**Dataset drift: {'yes' if self.dataset_drift else 'no'}**{fired} - {self.rule}",
            "",
        ]
        mv = self.multivariate
        if mv is not None:
            if mv.error is not None:
                lines.append(f"Multivariate (domain classifier): not run - {mv.error}")
            else:
                top = ", ".join(f"{t['name']} ({t['auc_drop']:.3f})" for t in mv.top_features)
                lines.append(
                    f"Multivariate (domain classifier): {'**drifted**' if mv.drifted else 'ok'}"
                    f" - AUC {_fmt(mv.auc)}, threshold {_fmt(mv.threshold)}, p-value "
                    f"{_fmt(mv.p_value, p=True)}, {mv.n_reference} + {mv.n_current} rows"
                    + (f"; separating features (AUC drop): {top}" if top else "")
                )
            lines.append("")
        lines += [
            "| column | role | kind | effect | threshold | p-value | drifted |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in self.features:
            if _no_labels_yet(f):
                verdict = "no labels yet"
            elif f.error:
                verdict = f"error: {f.error}"
            else:
                verdict = "**yes**" if f.drifted else "no"
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

    def to_html(
        self, batch: str | None = None, reference: str | None = None, at: str | None = None
    ) -> str:
        """A self-contained HTML page: what was compared and when, the verdict, then one
        section per column. `batch` and `reference` name the two sides; `at` is the time."""
        return _render_html(self, batch=batch, reference=reference, at=at)


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
.yes{color:#b00020;font-weight:600}.no{color:#1b5e20}.err{color:#8a6d3b}.na{color:#666}
.verdict{font-size:1.2em;padding:.5em 1em;border-radius:4px;background:#f3f3f3}
section{border-top:1px solid #ccc;padding:.8em 0}svg text{font:10px sans-serif;fill:#555}
.measures{color:#555;font-size:.9em}
.key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
"""


_EFFECT_NAMES = {
    "ks": "KS distance",
    "cramer_von_mises": "KS distance",
    "chi_square": "total variation distance",
    "psi": "population stability index",
    "jensen_shannon": "Jensen-Shannon distance",
    "wasserstein": "normalised Wasserstein distance",
}

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


def _multivariate_html(mv: MultivariateDrift | None) -> str:
    esc = html.escape
    if mv is None:
        return ""
    if mv.error is not None:
        state, body = ("err", "not run"), f'<p class="err">Not evaluated: {esc(mv.error)}</p>'
    else:
        state = ("yes", "drifted") if mv.drifted else ("no", "ok")
        rows = "".join(
            f"<tr><td>{esc(str(t['name']))}</td><td>{_fmt(t['auc_drop'])}</td></tr>"
            for t in mv.top_features
        )
        body = (
            "<p>A classifier learns to tell reference rows from current rows on half of them; "
            "its ROC AUC on the other half is 0.5 when nothing changed.</p>"
            f"<table><tr><th>AUC (held out)</th><td>{_fmt(mv.auc)}</td></tr>"
            f"<tr><th>threshold</th><td>{_fmt(mv.threshold)}</td></tr>"
            f"<tr><th>p-value</th><td>{_fmt(mv.p_value, p=True)}</td></tr>"
            f"<tr><th>rows used</th><td>{mv.n_reference} reference, {mv.n_current} current"
            f"</td></tr><tr><th>features</th><td>{len(mv.features)}</td></tr></table>"
            + (
                "<p>Features that separate the sides most (held-out AUC lost when shuffled):"
                f"</p><table><tr><th>feature</th><th>AUC drop</th></tr>{rows}</table>"
                if rows
                else ""
            )
        )
    return (
        f'<section id="multivariate"><h2>Multivariate (domain classifier) '
        f'<small class="{state[0]}">{state[1]}</small></h2>{body}</section>'
    )


def _no_labels_yet(f: FeatureDrift) -> bool:
    """A target column with no values in the current batch: its labels have not landed."""
    error = f.error or ""
    return f.role == "target" and "all values are null" in error and "in the current" in error


def _render_html(
    report: DriftReport,
    batch: str | None = None,
    reference: str | None = None,
    at: str | None = None,
) -> str:
    esc = html.escape
    title = f"Drift report: {batch}" if batch else "Drift report"
    compared = (
        f"<p>Batch <b>{esc(batch or 'current')}</b> against the reference "
        f"<b>{esc(reference or 'snapshot')}</b>"
        + (f", computed {esc(at)}" if at else "")
        + ". Histograms of numerical columns are drawn from each side's deciles (the mass "
        "between two deciles spread evenly): their shape is approximate.</p>"
    )
    verdict = "Dataset drift detected" if report.dataset_drift else "No dataset drift"
    if report.triggered_by:
        verdict += f" (fired by {' and '.join(report.triggered_by)})"
    rows, sections = [], []
    for i, f in enumerate(report.features):
        if _no_labels_yet(f):
            state = ("na", "no labels yet")
        elif f.error:
            state = ("err", "error")
        else:
            state = ("yes", "drifted") if f.drifted else ("no", "ok")
        rows.append(
            f'<tr><td><a href="#c{i}">{esc(f.name)}</a></td><td>{f.role}</td>'
            f"<td>{f.kind}</td><td>{_fmt(f.effect_size)}</td><td>{_fmt(f.threshold)}</td>"
            f'<td>{_fmt(f.p_value, p=True)}</td><td class="{state[0]}">{state[1]}</td>'
            "</tr>"
        )
        if _no_labels_yet(f):
            body = (
                '<p class="na">No labels yet: the target is compared once labels land '
                "(the batch is measured again then).</p>"
            )
        elif f.error:
            body = f'<p class="err">Not evaluated: {esc(f.error)}</p>'
        else:
            numeric = f.kind in ("numerical", "datetime")  # datetimes: epoch seconds
            plot = (_numeric_svg if numeric else _categorical_svg)(
                f.reference_summary, f.current_summary
            )
            effect_name = _EFFECT_NAMES.get(f.method, "effect")
            measures = ", ".join(
                f"{esc(k)} {_fmt(v, p=k.endswith('p_value'))}" for k, v in f.statistics.items()
            )
            body = (
                f"<p>{f.method} statistic {_fmt(f.statistic)}, p-value "
                f"{_fmt(f.p_value, p=True)}, {effect_name} {_fmt(f.effect_size)} "
                f"(threshold {_fmt(f.threshold)})</p>"
                + (f'<p class="measures">All measures: {measures}</p>' if measures else "")
                + plot
            )
        sections.append(
            f'<section id="c{i}"><h2>{esc(f.name)} <small class="{state[0]}">'
            f"{state[1]}</small></h2>{body}</section>"
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{compared}"
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
        f"{_multivariate_html(report.multivariate)}"
        f"{''.join(sections)}</body></html>"
    )
