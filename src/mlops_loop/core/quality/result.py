"""The verdict on one batch: its incidents and statistics, as JSON, Markdown and HTML."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops_loop.core.quality.spec import SCHEMA_VERSION, _jsonable


@dataclass(frozen=True)
class Incident:
    """One failed check: what kind, on which column, how bad, what was seen and expected."""

    kind: str
    column: str | None
    severity: str
    observed: Any
    expected: Any
    message: str

    def to_dict(self) -> dict:
        """The incident as plain JSON types."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class QualityResult:
    """The verdict on one batch: success is False iff some incident has severity "error"."""

    success: bool
    incidents: list[Incident]
    statistics: dict
    schema_version: str = SCHEMA_VERSION
    # The Great Expectations validation result, for its Data Docs page; not part of the JSON.
    gx_result: Any = field(default=None, repr=False, compare=False)

    def data_docs_html(self, batch: str | None = None, at: str | None = None) -> str | None:
        """The Data Docs page of this validation: every check GX ran, failed ones first, in one
        offline HTML file (inline CSS, no scripts, no links). None if GX ran no expectation.

        GX's own page loads its styles from CDNs and links to pages of a Data Docs site that is
        never built here: offline it rendered unstyled, with dead links.

        Args:
            batch: The batch key, shown in the title.
            at: When the batch was judged; GX's batch load time when not given.
        """
        if self.gx_result is None:
            return None
        from mlops_loop.core.quality.docs import render_validation_page

        return render_validation_page(
            self.gx_result,
            gate_passed=self.success,
            batch=batch,
            at=at,
            checks_judged=self.statistics.get("expectations_evaluated"),
        )

    def to_dict(self) -> dict:
        """`{"schema_version", "success", "incidents", "statistics"}`, JSON-serialisable."""
        return {
            "schema_version": self.schema_version,
            "success": self.success,
            "incidents": [i.to_dict() for i in self.incidents],
            "statistics": _jsonable(self.statistics),
        }

    def _summary(self) -> str:
        s = self.statistics
        errors = sum(i.severity == "error" for i in self.incidents)
        return (
            f"{s.get('rows', '?')} rows, {s.get('columns', '?')} columns; "
            f"{s.get('expectations_evaluated', '?')} checks, {errors} error(s), "
            f"{len(self.incidents) - errors} warning(s)"
        )

    def to_markdown(self) -> str:
        """A one-line verdict and an incident table, for Dagster metadata."""
        verdict = "PASSED" if self.success else "FAILED"
        lines = [f"**Data quality {verdict}**: {self._summary()}.", ""]
        if not self.incidents:
            return "\n".join([*lines, "No incidents."])
        lines += ["| severity | kind | column | message |", "|---|---|---|---|"]
        for i in self.incidents:
            cells = (i.severity, i.kind, i.column or "", i.message)
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def to_html(self) -> str:
        """A self-contained page (inline CSS, no assets): the verdict, then the incidents."""
        verdict, colour = ("PASSED", "#1a7f37") if self.success else ("FAILED", "#cf222e")
        rows = "".join(
            f"<tr class='{i.severity}'><td>{i.severity}</td><td>{html.escape(i.kind)}</td>"
            f"<td>{html.escape(i.column or '')}</td><td>{html.escape(i.message)}</td>"
            f"<td><code>{html.escape(json.dumps(_jsonable(i.observed)))}</code></td>"
            f"<td><code>{html.escape(json.dumps(_jsonable(i.expected)))}</code></td></tr>"
            for i in self.incidents
        )
        table = (
            "<table><thead><tr><th>Severity</th><th>Kind</th><th>Column</th><th>Message</th>"
            f"<th>Observed</th><th>Expected</th></tr></thead><tbody>{rows}</tbody></table>"
            if self.incidents
            else "<p>No incidents.</p>"
        )
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data quality: {verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
.verdict {{ font-size: 1.6rem; font-weight: 700; color: #fff; background: {colour};
  padding: .6rem 1rem; border-radius: 6px; display: inline-block; }}
table {{ border-collapse: collapse; margin-top: 1rem; width: 100%; }}
th, td {{ border: 1px solid #d0d7de; padding: .4rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} tr.error td:first-child {{ color: #cf222e; font-weight: 600; }}
tr.warn td:first-child {{ color: #9a6700; font-weight: 600; }} code {{ font-size: .85rem; }}
</style></head><body>
<div class="verdict">Data quality {verdict}</div>
<p>{html.escape(self._summary())}.</p>
{table}
</body></html>
"""
