"""Alert rules, state, notifiers and config, against real local HTTP and SMTP servers."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import socket
import socketserver
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_loop.core.alerts import (
    AlertError,
    AlertEvent,
    AlertRule,
    SmtpNotifier,
    WebhookNotifier,
    build_notifiers,
    evaluate_alerts,
    notify,
)
from mlops_loop.core.config import parse_config
from mlops_loop.core.errors import InvalidConfigError

BASE = {
    "columns": {"numerical": ["x"], "target": "y"},
    "sources": {"reference": "ref.parquet", "landing": "landing"},
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


def series(metric: str, values, start: int = 0, **extra) -> list[dict]:
    """History records b00, b01, ... with one metric (None for a missing value)."""
    out = []
    for i, v in enumerate(values, start):
        record = {"batch": f"b{i:02d}", **{k: vs[i - start] for k, vs in extra.items()}}
        if v is not None:
            record[metric] = v
        out.append(record)
    return out


def transitions(events: list[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.batch) for e in events]


def auc_floor(**kw) -> AlertRule:
    fields = {"name": "auc_floor", "metric": "roc_auc", "kind": "threshold"}
    fields |= {"direction": "below", "value": 0.7, "severity": "error"}
    return AlertRule(**(fields | kw))


# --- rule kinds ---------------------------------------------------------------------------


def test_threshold_fires_once_then_resolves_with_readable_messages():
    history = series("roc_auc", [0.8, 0.68, 0.65, 0.72, 0.74])
    events, state = evaluate_alerts([auc_floor()], history, None)
    assert transitions(events) == [("firing", "b01"), ("resolved", "b03")]
    fired, resolved = events
    assert fired.message == "roc_auc 0.68 is below 0.7 (rule auc_floor, error)"
    assert (fired.rule, fired.metric, fired.value, fired.threshold) == (
        "auc_floor",
        "roc_auc",
        0.68,
        0.7,
    )
    assert fired.severity == "error"
    assert (
        resolved.message == "roc_auc 0.72 is back at or above 0.7 (rule auc_floor, error, resolved)"
    )
    rule_state = state["rules"]["auc_floor"]
    assert rule_state["firing"] is False
    assert rule_state["last_fired_batch"] == "b01"
    assert rule_state["last_batch"] == "b04"


def test_threshold_above_on_latency():
    rule = AlertRule(
        name="slow", metric="p95_latency_ms", kind="threshold", direction="above", value=250
    )
    events, _ = evaluate_alerts([rule], series("p95_latency_ms", [120, 260.5, 240]), None)
    assert transitions(events) == [("firing", "b01"), ("resolved", "b02")]
    assert events[0].message == "p95_latency_ms 260.5 is above 250 (rule slow, warn)"


def test_hysteresis_keeps_an_oscillating_metric_to_one_firing():
    wobbling = [0.69, 0.71, 0.69, 0.72, 0.68, 0.71, 0.69, 0.76]
    history = series("roc_auc", wobbling)
    # Without a separate clear level the same series storms: fire, resolve, fire, ...
    storm, _ = evaluate_alerts([auc_floor()], history, None)
    assert [e.kind for e in storm].count("firing") == 4
    events, _ = evaluate_alerts([auc_floor(clear=0.75)], history, None)
    assert transitions(events) == [("firing", "b00"), ("resolved", "b07")]
    assert events[1].threshold == 0.75
    assert events[1].message == (
        "roc_auc 0.76 is back at or above 0.75 (rule auc_floor, error, resolved)"
    )


def test_cooldown_in_batches_blocks_a_refire_then_allows_it():
    rule = auc_floor(cooldown={"batches": 2})
    history = series("roc_auc", [0.6, 0.8, 0.6, 0.6, 0.8])
    events, state = evaluate_alerts([rule], history, None)
    # b02 breaks the level 2 batches after the firing one: quiet; b03 is past the cooldown.
    assert transitions(events) == [
        ("firing", "b00"),
        ("resolved", "b01"),
        ("firing", "b03"),
        ("resolved", "b04"),
    ]
    without, _ = evaluate_alerts([auc_floor()], history, None)
    assert ("firing", "b02") in transitions(without)
    assert state["rules"]["auc_floor"]["last_fired_batch"] == "b03"


def test_cooldown_in_seconds_uses_batch_times():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=m) for m in (0, 10, 20, 70, 80)]
    history = series("roc_auc", [0.6, 0.8, 0.6, 0.6, 0.8], time=times)
    rule = auc_floor(cooldown={"seconds": 3600})
    events, state = evaluate_alerts([rule], history, None)
    assert transitions(events) == [
        ("firing", "b00"),
        ("resolved", "b01"),
        ("firing", "b03"),
        ("resolved", "b04"),
    ]
    assert events[2].time == times[3].isoformat()
    assert state["rules"]["auc_floor"]["last_fired_time"] == times[3].isoformat()


def test_cooldown_in_seconds_without_batch_times_uses_now():
    rule = auc_floor(cooldown={"seconds": 600})
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    events, state = evaluate_alerts([rule], series("roc_auc", [0.6, 0.8]), None, now=t0)
    assert transitions(events) == [("firing", "b00"), ("resolved", "b01")]
    later = series("roc_auc", [0.6, 0.8, 0.6])
    quiet, state = evaluate_alerts([rule], later, state, now=t0 + timedelta(seconds=300))
    assert quiet == []
    again = series("roc_auc", [0.6, 0.8, 0.6, 0.6])
    fired, _ = evaluate_alerts([rule], again, state, now=t0 + timedelta(seconds=601))
    assert transitions(fired) == [("firing", "b03")]


def test_n_of_m_fires_when_n_of_the_last_m_batches_break():
    rule = AlertRule(
        name="drift_persistent",
        metric="drift_share",
        kind="n_of_m",
        direction="above",
        value=0.3,
        n=3,
        m=5,
    )
    values = [0.1, 0.4, 0.1, 0.4, 0.4, 0.1, 0.1, 0.1]
    events, state = evaluate_alerts([rule], series("drift_share", values), None)
    # b01 and b03 break alone (1 and 2 of the window); b04 makes 3 of 5 -> fires; b05 is
    # under the level but 3 of the last 5 still break -> stays firing; b06 has 2 -> resolves.
    assert transitions(events) == [("firing", "b04"), ("resolved", "b06")]
    assert events[0].message == (
        "drift_share 0.4 is above 0.3 in 3 of the last 5 batches (rule drift_persistent, warn)"
    )
    assert events[1].message == (
        "drift_share 0.1 is back at or below 0.3; above 0.3 in 2 of the last 5 batches "
        "(rule drift_persistent, warn, resolved)"
    )
    assert state["rules"]["drift_persistent"]["window"] == [True, True, False, False, False]


def test_n_of_m_window_skips_batches_without_the_metric():
    rule = AlertRule(
        name="r", metric="drift_share", kind="n_of_m", direction="above", value=0.3, n=2, m=2
    )
    values = [0.4, None, float("nan"), 0.5]
    events, _ = evaluate_alerts([rule], series("drift_share", values), None)
    assert transitions(events) == [("firing", "b03")]


def test_relative_drop_against_a_fixed_baseline():
    rule = AlertRule(
        name="auc_drop",
        metric="roc_auc",
        kind="relative_drop",
        drop=0.1,
        baseline={"value": 0.81},
        severity="error",
    )
    events, _ = evaluate_alerts([rule], series("roc_auc", [0.8, 0.74, 0.71, 0.729, 0.73]), None)
    # 0.729 is exactly a 10% drop: still firing; 0.73 is a 9.9% drop: resolved.
    assert transitions(events) == [("firing", "b02"), ("resolved", "b04")]
    fired = events[0]
    assert fired.message == "roc_auc 0.71 fell 12% below baseline 0.81 (rule auc_drop, error)"
    assert fired.baseline == 0.81
    assert fired.threshold == pytest.approx(0.729)
    exact, _ = evaluate_alerts([rule], series("roc_auc", [0.729]), None)
    assert transitions(exact) == [("firing", "b00")]


def test_relative_drop_against_the_mean_of_the_first_batches():
    rule = AlertRule(
        name="auc_drop",
        metric="roc_auc",
        kind="relative_drop",
        drop=0.1,
        baseline={"first_batches": 3},
        clear=0.05,
    )
    history = series("roc_auc", [0.80, 0.82, 0.81, 0.74, 0.70, 0.75, 0.78])
    events, state = evaluate_alerts([rule], history[:4], None)
    assert events == []  # 0.74 is 8.6% below 0.81
    assert state["rules"]["auc_drop"]["baseline"] == pytest.approx(0.81)
    # The baseline lives in the state: the first batches need not be passed again.
    events, state = evaluate_alerts([rule], history[3:], json.loads(json.dumps(state)))
    # 0.75 is 7.4% below: inside the 5% clear level it is not; 0.78 (3.7%) resolves.
    assert transitions(events) == [("firing", "b04"), ("resolved", "b06")]
    assert events[0].baseline == pytest.approx(0.81)
    assert events[1].threshold == pytest.approx(0.81 * 0.95)
    assert "within the clear level of 5.0%" in events[1].message


def test_relative_drop_against_a_baseline_metric_of_the_same_batch():
    rule = AlertRule(
        name="auc_vs_champion",
        metric="roc_auc",
        kind="relative_drop",
        drop=0.05,
        baseline={"metric": "champion_roc_auc"},
    )
    champion = [0.9, None, 0.8, 0.8]
    history = series("roc_auc", [0.84, 0.5, 0.79, 0.75], champion_roc_auc=champion)
    events, _ = evaluate_alerts([rule], history, None)
    # b00: 6.7% below 0.9 fires; b01 has no baseline: not judged; b02: 1.25% below 0.8 resolves.
    assert transitions(events) == [("firing", "b00"), ("resolved", "b02"), ("firing", "b03")]
    assert events[0].baseline == 0.9 and events[2].baseline == 0.8


def test_relative_rise_above_the_baseline():
    rule = AlertRule(
        name="latency_up",
        metric="p95_latency_ms",
        kind="relative_drop",
        direction="above",
        drop=0.25,
        baseline={"value": 200},
    )
    events, _ = evaluate_alerts([rule], series("p95_latency_ms", [210, 260, 190]), None)
    assert transitions(events) == [("firing", "b01"), ("resolved", "b02")]
    assert (
        events[0].message
        == "p95_latency_ms 260 rose 30% above baseline 200 (rule latency_up, warn)"
    )
    assert events[0].threshold == 250
    assert events[1].message == (
        "p95_latency_ms 190 is back at or below baseline 200 (rule latency_up, warn, resolved)"
    )


# --- state ----------------------------------------------------------------------------------


def test_state_resumes_after_the_last_seen_batch_and_is_json():
    history = series("roc_auc", [0.8, 0.6, 0.6])
    first, state = evaluate_alerts([auc_floor()], history[:2], {})
    assert transitions(first) == [("firing", "b01")]
    assert json.loads(json.dumps(state)) == state
    again, same = evaluate_alerts([auc_floor()], history[:2], state)
    assert again == [] and same == state  # nothing new: no event repeated
    more, _ = evaluate_alerts([auc_floor()], history, state)
    assert more == []  # still firing: no second firing event


def test_inputs_are_not_modified_and_dropped_rules_leave_the_state():
    rule_b = AlertRule(
        name="rows_low", metric="rows", kind="threshold", direction="below", value=100
    )
    history = series("roc_auc", [0.6, 0.8], rows=[50, 500])
    _, state = evaluate_alerts([auc_floor(), rule_b], history, None)
    snapshot = json.dumps(state, sort_keys=True)
    frozen_history = json.dumps(history, sort_keys=True)
    _, new = evaluate_alerts([rule_b], history + series("roc_auc", [0.5], start=2, rows=[5]), state)
    assert json.dumps(state, sort_keys=True) == snapshot
    assert json.dumps(history, sort_keys=True) == frozen_history
    assert set(new["rules"]) == {"rows_low"}


RULES = [
    {
        "name": "t",
        "metric": "m",
        "kind": "threshold",
        "direction": "below",
        "value": 0.5,
        "clear": 0.6,
        "cooldown": {"batches": 2},
    },
    {
        "name": "s",
        "metric": "m",
        "kind": "threshold",
        "direction": "above",
        "value": 0.7,
        "cooldown": {"seconds": 1800},
    },
    {
        "name": "n",
        "metric": "m",
        "kind": "n_of_m",
        "direction": "below",
        "value": 0.5,
        "n": 2,
        "m": 3,
    },
    {
        "name": "r",
        "metric": "m",
        "kind": "relative_drop",
        "drop": 0.2,
        "baseline": {"first_batches": 2},
        "clear": 0.1,
    },
    {
        "name": "c",
        "metric": "m",
        "kind": "relative_drop",
        "drop": 0.1,
        "baseline": {"metric": "base"},
    },
]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.floats(0.05, 1.0)), min_size=1, max_size=25),
    cuts=st.lists(st.integers(0, 25), max_size=4),
)
def test_batch_by_batch_with_persisted_state_equals_one_pass(values, cuts):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=20 * i) for i in range(len(values))]
    bases = [None if v is None else 0.6 + (i % 3) * 0.1 for i, v in enumerate(values)]
    history = series("m", values, time=times, base=bases)
    whole, whole_state = evaluate_alerts(RULES, history, None)
    collected, state = [], None
    for end in sorted({*(c for c in cuts if c <= len(history)), len(history)}):
        events, state = evaluate_alerts(RULES, history[:end], state)
        state = json.loads(json.dumps(state))
        collected += events
    assert collected == whole
    assert state == whole_state
    for rule in RULES:  # firing and resolved alternate, starting with firing
        kinds = [e.kind for e in whole if e.rule == rule["name"]]
        assert kinds == ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "state", "match"),
    [
        ([{"roc_auc": 0.7}], None, r"history\[0\] has no 'batch' key"),
        (
            [{"batch": "a", "roc_auc": 0.7}, {"batch": "a"}],
            None,
            r"history\[1\]\.batch 'a' appears twice",
        ),
        (
            [{"batch": "a", "roc_auc": "high"}],
            None,
            r"batch 'a': metric 'roc_auc' is 'high', expected a number",
        ),
        (
            [{"batch": "a", "time": "yesterday"}],
            None,
            r"history\[0\]\.time: 'yesterday' is not an ISO 8601",
        ),
        ([], {"version": 7, "rules": {}}, r"alert state version is 7, expected 1"),
        (
            [],
            {"version": 1, "rules": {"auc_floor": 3}},
            r"rules\.auc_floor is 3, expected a mapping",
        ),
        (
            [],
            {"version": 1, "rules": {"auc_floor": {"window": "TTF"}}},
            r"rules\.auc_floor\.window is 'TTF', expected list",
        ),
        (
            [],
            {"version": 1, "rules": {"auc_floor": {"batches_since_fired": True}}},
            r"rules\.auc_floor\.batches_since_fired is True, expected int or null",
        ),
    ],
)
def test_malformed_history_or_state_is_named(history, state, match):
    with pytest.raises(AlertError, match=match):
        evaluate_alerts([auc_floor()], history, state)


def test_rule_mappings_are_validated_naming_the_field():
    with pytest.raises(
        AlertError, match=r"rules\[0\]\.n: Input should be greater than or equal to 1"
    ):
        evaluate_alerts(
            [
                {
                    "name": "x",
                    "metric": "m",
                    "kind": "n_of_m",
                    "direction": "above",
                    "value": 1,
                    "n": 0,
                    "m": 2,
                }
            ],
            [],
            None,
        )
    with pytest.raises(AlertError, match=r"rules\[0\]: .*metric 'time' is a reserved history key"):
        evaluate_alerts([{**THRESHOLD, "metric": "time"}], [], None)
    with pytest.raises(AlertError, match="rule name 'auc_floor' is used twice"):
        evaluate_alerts([auc_floor(), auc_floor()], [], None)


# --- config ---------------------------------------------------------------------------------


def alerts_doc(rules=(), notifiers=()) -> dict:
    return {**BASE, "alerts": {"rules": list(rules), "notifiers": list(notifiers)}}


THRESHOLD = {
    "name": "auc_floor",
    "metric": "roc_auc",
    "kind": "threshold",
    "direction": "below",
    "value": 0.7,
}


MAIL = {"type": "smtp", "host": "mail", "sender": "a@b.org", "recipients": ["c@d.org"]}
DROP = {"name": "d", "metric": "roc_auc", "kind": "relative_drop", "drop": 0.1}
RULE0 = r"alerts\.rules\.0"
NOTE0 = r"alerts\.notifiers\.0"
BAD_RULES = [
    ({"value": None}, rf"{RULE0}: .*kind 'threshold' needs 'value'"),
    (
        {"kind": "spike"},
        rf"{RULE0}\.kind: Input should be 'threshold', 'relative_drop' or 'n_of_m' \(got 'spike'\)",
    ),
    ({"drop": 0.1}, rf"{RULE0}: .*field 'drop' applies to kind 'relative_drop', not 'threshold'"),
    ({"clear": 0.6}, rf"{RULE0}: .*'clear' \(0\.6\) must be at or above 'value' \(0\.7\)"),
    ({"kind": "n_of_m", "n": 4, "m": 3}, rf"{RULE0}: .*'n' \(4\) is larger than 'm' \(3\)"),
    ({"severity": "critical"}, rf"{RULE0}\.severity: Input should be 'warn' or 'error'"),
    ({"cooldown": {"minutes": 5}}, rf"{RULE0}\.cooldown\.minutes: Extra inputs"),
]
BAD_NOTIFIERS = [
    ({"type": "pager"}, rf"{NOTE0}: Input tag 'pager' found using 'type' does not match"),
    (
        {"type": "webhook", "url": "hooks.slack.com/services/T/B/x"},
        rf"{NOTE0}\.webhook\.url: String should match pattern",
    ),
    ({"type": "webhook"}, rf"{NOTE0}\.webhook: .*exactly one of 'url' and 'url_env'"),
    (
        {**MAIL, "password": "hunter2"},
        rf"{NOTE0}\.smtp: .*'password' must not be written in the configuration: "
        "set 'password_env'",
    ),
    ({**MAIL, "recipients": []}, rf"{NOTE0}\.smtp\.recipients: List should have at least 1 item"),
    (
        {**MAIL, "username_env": "SMTP_USER"},
        rf"{NOTE0}\.smtp: .*'username_env' and 'password_env' go together",
    ),
    (
        {**MAIL, "port": 0},
        rf"{NOTE0}\.smtp\.port: Input should be greater than or equal to 1 \(got 0\)",
    ),
]


@pytest.mark.parametrize(("patch", "match"), BAD_RULES)
def test_rule_config_errors_name_the_field(patch, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_config(alerts_doc([THRESHOLD | patch]))


@pytest.mark.parametrize(("notifier", "match"), BAD_NOTIFIERS)
def test_notifier_config_errors_name_the_field(notifier, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_config(alerts_doc(notifiers=[notifier]))


def test_more_config_errors_name_the_field():
    both = {**DROP, "baseline": {"value": 0.8, "first_batches": 3}}
    with pytest.raises(
        InvalidConfigError,
        match=rf"{RULE0}\.baseline: .*exactly one of 'value', 'metric', 'first_batches' "
        r"\(got value, first_batches\)",
    ):
        parse_config(alerts_doc([both]))
    with pytest.raises(
        InvalidConfigError, match=r"alerts: .*rules\[1\]\.name: rule name 'auc_floor' is used twice"
    ):
        parse_config(alerts_doc([THRESHOLD, THRESHOLD]))


def test_inline_password_never_shows_in_the_error():
    doc = alerts_doc(notifiers=[{**MAIL, "password": "hunter2"}])
    with pytest.raises(InvalidConfigError) as info:
        parse_config(doc)
    assert "hunter2" not in str(info.value)


def test_docs_example_is_a_valid_loop_config(tmp_path):
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks, "docs/alerts.md has no yaml example"
    doc = yaml.safe_load(blocks[0])
    config = parse_config({**BASE, **doc}, base=tmp_path)
    assert {r.kind for r in config.alerts.rules} == {"threshold", "relative_drop", "n_of_m"}
    kinds = [type(n).__name__ for n in build_notifiers(config.alerts)]
    assert kinds == ["WebhookNotifier", "SmtpNotifier"]


def test_default_config_has_no_alerts():
    config = parse_config(BASE)
    assert config.alerts.rules == [] and build_notifiers(config.alerts) == []


def test_build_notifiers_validates_mappings():
    with pytest.raises(InvalidConfigError, match=r"notifiers\[0\]\.smtp\.sender: Field required"):
        build_notifiers([{"type": "smtp", "host": "mail", "recipients": ["c@d.org"]}])


def test_public_api_imports_and_stays_light():
    code = (
        "import sys; from mlops_loop.core.alerts import AlertRule, evaluate_alerts, notify, "
        "build_notifiers; import mlops_loop.core.config; "
        "heavy = [m for m in ('smtplib', 'urllib.request', 'dagster') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"alerts import heavy modules up front: {out.stdout} {out.stderr}"


# --- real servers ---------------------------------------------------------------------------


class _Capture(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), body))
        status, reply = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.requests = []
    server.reply = (200, b"ok")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class _SmtpSink(socketserver.StreamRequestHandler):
    """Enough SMTP for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        server = self.server
        self.say("220 sink ESMTP")
        sender, recipients = None, []
        while line := self.rfile.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
            elif verb in ("HELO", "NOOP"):
                self.say("250 ok")
            elif verb == "AUTH":
                _, user, password = base64.b64decode(command.split()[2]).split(b"\0")
                server.logins.append((user.decode(), password.decode()))
                ok = (user.decode(), password.decode()) == server.account
                self.say("235 authenticated" if ok else "535 bad credentials")
            elif verb == "MAIL":
                sender, recipients = re.search(r"<(.*?)>", command).group(1), []
                self.say("250 ok")
            elif verb == "RCPT":
                address = re.search(r"<(.*?)>", command).group(1)
                if address in server.refuse:
                    self.say("550 no such mailbox")
                else:
                    recipients.append(address)
                    self.say("250 ok")
            elif verb == "DATA":
                self.say("354 end with <CRLF>.<CRLF>")
                data = []
                while (row := self.rfile.readline()) != b".\r\n":
                    data.append(row[1:] if row.startswith(b"..") else row)
                server.messages.append((sender, recipients, b"".join(data)))
                self.say("250 queued")
            elif verb == "RSET":
                sender, recipients = None, []
                self.say("250 ok")
            elif verb == "QUIT":
                self.say("221 bye")
                return
            else:
                self.say("502 not implemented")


@pytest.fixture
def smtp_sink():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.daemon_threads = True
    server.messages, server.logins, server.refuse = [], [], set()
    server.account = ("alerts", "s3cret")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def some_events() -> list[AlertEvent]:
    history = series("roc_auc", [0.71, 0.6], drift_share=[0.5, 0.1])
    rules = [
        AlertRule(
            name="auc_drop",
            metric="roc_auc",
            kind="relative_drop",
            drop=0.1,
            baseline={"value": 0.81},
            severity="error",
        ),
        AlertRule(
            name="drift_high", metric="drift_share", kind="threshold", direction="above", value=0.3
        ),
    ]
    events, _ = evaluate_alerts(rules, history, None)
    assert [(e.rule, e.kind) for e in events] == [
        ("auc_drop", "firing"),
        ("drift_high", "firing"),
        ("drift_high", "resolved"),
    ]
    return events


def test_webhook_posts_slack_compatible_json(webhook_server):
    url = f"http://127.0.0.1:{webhook_server.server_port}/services/T0/B0/token"
    events = some_events()
    results = notify(events, [WebhookNotifier(url, timeout=5)])
    assert [r.to_dict() for r in results] == [
        {"notifier": "webhook:127.0.0.1", "ok": True, "events": 3, "error": None}
    ]
    ((path, headers, body),) = webhook_server.requests
    assert path == "/services/T0/B0/token"
    assert headers["Content-Type"].startswith("application/json")
    payload = json.loads(body)
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].splitlines()[0] == "mlops-loop: 3 alerts: 2 firing, 1 resolved"
    first = "FIRING (error) roc_auc 0.71 fell 12% below baseline 0.81 (rule auc_drop, error)"
    assert f"{first} [batch b00]" in payload["text"].splitlines()
    assert len(payload["blocks"]) == 4
    for block in payload["blocks"]:
        assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    assert (
        "*RESOLVED (warn)* drift_share 0.1 is back at or below 0.3"
        in payload["blocks"][3]["text"]["text"]
    )


def test_webhook_url_from_env_and_http_errors_hide_the_token(webhook_server, monkeypatch):
    url = f"http://127.0.0.1:{webhook_server.server_port}/hooks/SECRET-TOKEN"
    monkeypatch.setenv("ALERT_HOOK", url)
    webhook_server.reply = (500, b"invalid_payload")
    (notifier,) = build_notifiers([{"type": "webhook", "url_env": "ALERT_HOOK", "name": "slack"}])
    (result,) = notify(some_events(), [notifier])
    assert not result.ok and result.notifier == "slack"
    assert "HTTP 500: invalid_payload" in result.error
    assert "SECRET-TOKEN" not in result.error
    assert webhook_server.requests[0][0] == "/hooks/SECRET-TOKEN"
    monkeypatch.delenv("ALERT_HOOK")
    (unset,) = notify(some_events(), [notifier])
    assert unset.error == "DeliveryError: environment variable 'ALERT_HOOK' (url_env) is not set"


def test_notifiers_pointing_at_a_closed_port_return_errors_without_raising():
    port = closed_port()
    notifiers = [
        WebhookNotifier(f"http://127.0.0.1:{port}/hook", timeout=5),
        SmtpNotifier("127.0.0.1", port, "loop@example.org", ["ops@example.org"], timeout=5),
    ]
    results = notify(some_events(), notifiers)
    assert [r.ok for r in results] == [False, False]
    assert results[0].error.startswith(f"DeliveryError: cannot reach http://127.0.0.1:{port}:")
    assert "ConnectionRefusedError" in results[1].error


def test_a_server_that_never_answers_times_out_as_an_error():
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        notifiers = [
            WebhookNotifier(f"http://127.0.0.1:{port}/hook", timeout=0.3),
            SmtpNotifier("127.0.0.1", port, "loop@example.org", ["ops@example.org"], timeout=0.3),
        ]
        results = notify(some_events(), notifiers)
    assert [r.ok for r in results] == [False, False]
    assert results[0].error == f"DeliveryError: http://127.0.0.1:{port} did not answer within 0.3 s"
    assert results[1].error.endswith("timed out")


def test_smtp_delivers_subject_and_body(smtp_sink):
    events = some_events()
    notifier = SmtpNotifier(
        "127.0.0.1",
        smtp_sink.server_address[1],
        "loop@example.org",
        ["ops@example.org", "ml@example.org"],
        timeout=5,
    )
    (result,) = notify(events, [notifier])
    assert result.ok, result.error
    ((sender, recipients, data),) = smtp_sink.messages
    assert sender == "loop@example.org"
    assert recipients == ["ops@example.org", "ml@example.org"]
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "[mlops-loop] 3 alerts: 2 firing, 1 resolved"
    assert message["To"] == "ops@example.org, ml@example.org"
    body = message.get_content()
    assert "FIRING (error) roc_auc 0.71 fell 12% below baseline 0.81 (rule auc_drop, error)" in body
    assert "  baseline: 0.81" in body
    assert "RESOLVED (warn) drift_share 0.1 is back at or below 0.3" in body


def test_smtp_logs_in_with_credentials_from_env(smtp_sink, monkeypatch):
    monkeypatch.setenv("SMTP_USER", "alerts")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    port = smtp_sink.server_address[1]
    doc = {
        "type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "sender": "loop@example.org",
        "recipients": ["ops@example.org"],
        "username_env": "SMTP_USER",
        "password_env": "SMTP_PASSWORD",
        "min_severity": "error",
        "subject_prefix": "[churn]",
    }
    (notifier,) = build_notifiers(parse_config(alerts_doc(notifiers=[doc])).alerts)
    (result,) = notify(some_events(), [notifier])
    assert result.ok and result.events == 1  # only the error-severity event
    assert smtp_sink.logins == [("alerts", "s3cret")]
    message = email.message_from_bytes(smtp_sink.messages[0][2], policy=email.policy.default)
    assert message["Subject"] == "[churn] auc_drop firing (error) on batch b00"

    monkeypatch.setenv("SMTP_PASSWORD", "wrong")
    (refused,) = notify(some_events(), [notifier])
    assert not refused.ok and "SMTPAuthenticationError" in refused.error and "535" in refused.error
    monkeypatch.delenv("SMTP_PASSWORD")
    (missing,) = notify(some_events(), [notifier])
    assert (
        missing.error
        == "DeliveryError: environment variable 'SMTP_PASSWORD' (password_env) is not set"
    )
    assert len(smtp_sink.messages) == 1


def test_smtp_partial_refusal_and_missing_starttls_are_errors(smtp_sink):
    port = smtp_sink.server_address[1]
    smtp_sink.refuse.add("gone@example.org")
    partial = SmtpNotifier(
        "127.0.0.1", port, "loop@example.org", ["ops@example.org", "gone@example.org"], timeout=5
    )
    tls = SmtpNotifier(
        "127.0.0.1", port, "loop@example.org", ["ops@example.org"], starttls=True, timeout=5
    )
    first, second = notify(some_events(), [partial, tls])
    assert not first.ok
    assert "delivered to 1 of 2 recipients; refused: gone@example.org (550" in first.error
    assert not second.ok and "STARTTLS" in second.error
    assert [m[1] for m in smtp_sink.messages] == [["ops@example.org"]]


class _Broken:
    name = "broken"
    min_severity = "warn"

    def send(self, events):
        raise RuntimeError("channel exploded")


def test_a_failing_notifier_does_not_stop_the_others(webhook_server):
    url = f"http://127.0.0.1:{webhook_server.server_port}/hook"
    errors_only = WebhookNotifier(url, min_severity="error", name="pager")
    results = notify(some_events(), [_Broken(), errors_only])
    assert [r.to_dict() for r in results] == [
        {"notifier": "broken", "ok": False, "events": 3, "error": "RuntimeError: channel exploded"},
        {"notifier": "pager", "ok": True, "events": 1, "error": None},
    ]
    assert len(webhook_server.requests) == 1
    assert notify([], [_Broken()])[0].to_dict() == {
        "notifier": "broken",
        "ok": True,
        "events": 0,
        "error": None,
    }
