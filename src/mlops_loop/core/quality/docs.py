"""The quality gate's Data Docs page: every check GX ran on a batch, in one offline HTML file.

GX's own Data Docs page loads its styles and scripts from public CDNs and links to sibling
pages of a Data Docs site; logged alone to MLflow and opened offline, it renders unstyled with
dead links. This page reads the same validation result and needs nothing else: inline CSS, no
scripts, no links.
"""

from __future__ import annotations

import html
import json
from typing import Any

from mlops_loop.core.quality.spec import _jsonable

#: Values of a list (a value set, a column set, examples) shown before "… and N more".
LIST_ITEMS = 12
#: Unexpected values shown as examples of a failed check.
EXAMPLES = 5
#: Characters of one value shown before it is cut.
VALUE_CHARS = 80
#: Keyword arguments that say nothing about what is expected.
_NOT_EXPECTED = frozenset({"batch_id", "column", "column_list", "meta", "result_format"})

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;
margin:1.5em auto;max-width:72em;padding:0 1em}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em}
.verdict{display:inline-block;color:#fff;font-weight:700;padding:.35em .8em;border-radius:6px}
.verdict.passed{background:#1a7f37}.verdict.failed{background:#cf222e}
.meta{color:#57606a;margin:.3em 0}.meta b{color:#1f2328}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border-bottom:1px solid #d0d7de;padding:.35em .5em;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f6f8fa;font-weight:600}
col.status{width:7.5em}col.column{width:11em}col.kind{width:15em}
.status{font-weight:700;white-space:nowrap}
tr.failed.error .status{color:#cf222e}tr.failed.warn .status{color:#9a6700}
tr.passed .status{color:#1a7f37;font-weight:400}
tr.failed.error{background:#fff5f5}tr.failed.warn{background:#fffbea}
.type{display:block;color:#57606a;font-size:.85em}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.note{color:#57606a;font-size:.9em}
@media (max-width:720px){table,thead,tbody,tr,td{display:block;width:auto}
colgroup,thead{display:none}tr{border-bottom:2px solid #d0d7de;padding:.3em 0}
td{border:0;padding:.1em .5em}td::before{content:attr(data-label) ": ";color:#57606a}}
"""


def render_validation_page(
    gx_result: Any,
    *,
    gate_passed: bool,
    batch: str | None = None,
    at: str | None = None,
    checks_judged: int | None = None,
) -> str:
    """The page of one GX validation result: failed checks first, then the passed ones.

    Args:
        gx_result: GX's `ExpectationSuiteValidationResult` (expectations built by `_run_gx`,
            whose `meta` carries each suite entry's kind and severity).
        gate_passed: The gate's verdict (a failed "warn" check does not fail it).
        batch: The batch key, shown in the title.
        at: When the batch was judged; GX's batch load time when not given.
        checks_judged: Checks the gate judged in all, when more than GX ran (type checks, or
            checks a first pandas pass found passing, are not in GX's result).
    """
    rows = sorted((_row(r) for r in gx_result.results), key=lambda r: r["order"])
    failed = sum(not r["passed"] for r in rows)
    verdict = "PASSED" if gate_passed else "FAILED"
    suite = getattr(gx_result, "suite_name", None) or "quality_gate"
    when = at or _load_time(gx_result)
    version = (gx_result.meta or {}).get("great_expectations_version")
    esc = html.escape
    title = f"Data quality {verdict}: {batch}" if batch else f"Data quality {verdict}"
    facts = [
        f"Batch <b>{esc(batch or 'current')}</b>",
        f"judged <b>{esc(when)}</b>" if when else "",
        f"suite <b>{esc(str(suite))}</b>",
        f"Great Expectations {esc(str(version))}" if version else "",
    ]
    summary = (
        f"{len(rows)} checks run by Great Expectations: {failed} failed, "
        f"{len(rows) - failed} passed."
    )
    note = ""
    if checks_judged is not None and checks_judged > len(rows):
        note = (
            f'<p class="note">The gate judged {checks_judged} checks; the other '
            f"{checks_judged - len(rows)} (column types, and on large or wide batches the checks "
            "a first pass in pandas found passing) were judged outside Great Expectations and "
            "are not listed here. quality/report.html lists every incident.</p>"
        )
    body = "".join(_tr(r) for r in rows) or '<tr><td colspan="5">No checks ran.</td></tr>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<span class="verdict {verdict.lower()}">Data quality {verdict}</span>'
        f"<h1>Expectation Validation Result{': ' + esc(batch) if batch else ''}</h1>"
        f'<p class="meta">{", ".join(f for f in facts if f)}.</p>'
        f"<p>{esc(summary)}</p>{note}"
        '<table><colgroup><col class="status"><col class="column"><col class="kind">'
        "<col><col></colgroup><thead><tr><th>Status</th><th>Column</th><th>Check</th>"
        f"<th>Observed</th><th>Expected</th></tr></thead><tbody>{body}</tbody></table>"
        "</body></html>\n"
    )


def _row(r: Any) -> dict:
    config = r.expectation_config
    kwargs = dict(config.kwargs) if config is not None else {}
    meta = (config.meta if config is not None else None) or {}
    severity = str(meta.get("severity", "error"))
    passed = bool(r.success)
    error = _error(r.exception_info or {})
    row = {
        "order": (passed, severity != "error", meta.get("spec_index", 0)),
        "passed": passed,
        "severity": severity,
        "column": _columns(kwargs),
        "kind": str(meta.get("kind") or ""),
        "type": str(config.type) if config is not None else "",
        "observed": f"could not run: {error}"
        if error
        else _observed(r.result or {}, str(config.type) if config else ""),
        "expected": _expected(kwargs, str(config.type) if config else ""),
    }
    if row["type"] == "expect_column_to_exist" and not error:
        row["observed"], row["expected"] = ("present" if passed else "absent"), "present"
    return row


def _tr(r: dict) -> str:
    esc = html.escape
    status = "passed" if r["passed"] else ("failed" if r["severity"] == "error" else "warning")
    kind = esc(r["kind"].replace("_", " ")) if r["kind"] else ""
    return (
        f'<tr class="{"passed" if r["passed"] else "failed"} {esc(r["severity"])}">'
        f'<td class="status" data-label="Status">{status}</td>'
        f'<td data-label="Column">{esc(r["column"])}</td>'
        f'<td data-label="Check">{kind}<span class="type">{esc(r["type"])}</span></td>'
        f'<td data-label="Observed">{esc(r["observed"])}</td>'
        f'<td data-label="Expected">{esc(r["expected"])}</td></tr>'
    )


def _columns(kwargs: dict) -> str:
    names = [kwargs.get(k) for k in ("column", "column_A", "column_B")]
    names += list(kwargs.get("column_list") or [])
    named = [str(n) for n in names if n is not None]
    return ", ".join(named) if named else "(table)"


def _error(info: dict) -> str | None:
    # As `incidents._gx_error` (not imported: `result` imports this module, `incidents` it).
    for item in [info, *info.values()]:
        if isinstance(item, dict) and (
            item.get("raised_exception") or item.get("exception_message")
        ):
            return str(item.get("exception_message") or "unknown error")
    return None


def _value(value: Any) -> str:
    value = _jsonable(value)
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list):
        shown = ", ".join(_value(v) for v in value[:LIST_ITEMS])
        more = f" … and {len(value) - LIST_ITEMS} more" if len(value) > LIST_ITEMS else ""
        text = f"[{shown}{more}]"
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= VALUE_CHARS * 3 else text[: VALUE_CHARS * 3] + "…"


def _observed(res: dict, gx_type: str) -> str:
    if "observed_value" in res:
        return _value(res["observed_value"])
    if "unexpected_count" not in res:
        return "—"
    count, total = res.get("unexpected_count") or 0, res.get("element_count") or 0
    share = res.get("unexpected_percent")
    what = "null" if gx_type == "expect_column_values_to_not_be_null" else "unexpected"
    text = f"{count} of {total} values {what}" + (
        f" ({share:.3g}%)" if isinstance(share, int | float) else ""
    )
    if res.get("missing_count"):
        text += f"; {res['missing_count']} missing"
    # GX counts each NaN apart ("null ×1" a dozen times): examples that are nulls say nothing.
    examples = [
        e
        for e in res.get("partial_unexpected_counts") or []
        if isinstance(e, dict) and _jsonable(e.get("value")) is not None
    ][:EXAMPLES]
    if examples:
        shown = ", ".join(
            _value(e.get("value"))[:VALUE_CHARS]
            + (f" ×{e['count']}" if (e.get("count") or 1) > 1 else "")
            for e in examples
        )
        text += f"; e.g. {shown}"
    return text


def _expected(kwargs: dict, gx_type: str) -> str:
    parts = ["not null"] if gx_type == "expect_column_values_to_not_be_null" else []
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        parts.append(f"between {_value(low)} and {_value(high)}")
    elif low is not None:
        parts.append(f"at least {_value(low)}")
    elif high is not None:
        parts.append(f"at most {_value(high)}")
    for key, value in kwargs.items():
        if key in _NOT_EXPECTED or key in ("min_value", "max_value", "mostly") or value is None:
            continue
        parts.append(f"{key.replace('_', ' ')} {_value(value)}")
    if kwargs.get("mostly") is not None and kwargs["mostly"] < 1:
        parts.append(f"for at least {float(kwargs['mostly']):.1%} of values")
    return "; ".join(parts) or "—"


def _load_time(gx_result: Any) -> str | None:
    """GX's batch load time (`20261204T030831.995272Z`) as `2026-12-04 03:08:31 UTC`."""
    stamp = ((gx_result.meta or {}).get("batch_markers") or {}).get("ge_load_time")
    if not isinstance(stamp, str) or len(stamp) < 15:
        return None
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]} UTC"
