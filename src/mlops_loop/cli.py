"""The `mlops-loop` command. Heavy libraries are imported by the subcommand that needs them."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mlops_loop.core.errors import MlopsLoopError

DEFAULT_CONFIG = ".demo/loop.yaml"


class OutputPathError(MlopsLoopError, OSError):
    """An --output or --plot path cannot be written (a folder, or under a file)."""


def _config(path: str | None, check_estimator: bool = True) -> Any:
    """The loop config, its tracking URI resolved as the Dagster code location resolves it:
    $MLOPS_LOOP_TRACKING_URI first, then the YAML's. A command that never trains passes
    `check_estimator=False` (no scikit-learn import)."""
    from mlops_loop.core.config import load_config
    from mlops_loop.core.tracking import resolve_tracking_uri

    path = path or os.environ.get("MLOPS_LOOP_CONFIG") or DEFAULT_CONFIG
    return resolve_tracking_uri(load_config(path, check_estimator=check_estimator))


def _v(version: Any) -> str:
    """A model version as printed: `v3`, or `none`."""
    return "none" if version is None else f"v{version}"


def _num(value: Any, digits: int = 3) -> str:
    """A metric as printed: rounded, or `-` when unknown."""
    if value is None:
        return "-"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _short(text: Any, width: int = 120) -> str:
    """One line of text cut at a word boundary, never inside a number."""
    import textwrap

    return textwrap.shorten(str(text or ""), width=width, placeholder=" ...") or "-"


def _output(path: str, option: str) -> Path:
    """Where `option` writes: its folder created if missing.

    Raises:
        OutputPathError: the path is a folder, or a file stands where a folder should be.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputPathError(f"{option} {out}: is a folder; expected the path of a file")
    blocking = next((p for p in [out.parent, *out.parent.parents] if p.is_file()), None)
    if blocking is not None:
        raise OutputPathError(
            f"{option} {out}: {blocking} is a file, not a folder; expected a path whose "
            "folders are folders (missing ones are created)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    from mlops_loop.demo.runner import format_summary, prepare_workdir, run_demo

    if args.prepare_only:
        # For another orchestrator (Airflow): the stream's files, nothing run, nothing landed.
        workdir = Path(args.workdir)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        config_path = prepare_workdir(workdir).resolve()
        print(
            f"Demo loop written to {config_path}: the batches wait in {workdir / 'incoming'}, "
            f"their labels in {workdir / 'incoming_labels'}; land them in "
            f"{workdir / 'landing'} and {workdir / 'labels'}, one week at a time."
        )
        return 0

    home = Path(args.dagster_home or os.environ.get("DAGSTER_HOME") or "dagster_home")
    status = run_demo(Path(args.workdir), home, reset=not args.keep, backtest=not args.no_backtest)
    print(format_summary(status, home))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlops_loop.core.steps.status import loop_status, monitoring_plot, require_loop_state

    config = _config(args.config, check_estimator=False)
    require_loop_state(config)  # before anything is written
    plot = _output(args.plot, "--plot") if args.plot else None
    status = loop_status(config)
    if plot is not None:
        plot.write_text(monitoring_plot(config))
        print(f"monitoring plot written to {args.plot}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(status.to_dict(), indent=2, default=str))
        return 0
    name = status.metric_name
    print(f"model {status.model}  ({status.task}; tracking {status.tracking_uri})")
    if status.champion is None:
        print("  champion   : none yet (run bootstrap_job)")
    else:
        since = f"  since {status.champion_since}" if status.champion_since else ""
        print(f"  champion   : {_v(status.champion)}  {name} {_num(status.champion_metric)}{since}")
    if status.challenger is None:
        print("  challenger : none")
    else:
        print(
            f"  challenger : {_v(status.challenger)}  {name} {_num(status.challenger_metric)}  "
            f"({status.challenger_decision or 'undecided'})"
        )
    suite = f"  quality    : suite v{status.suite_version}"
    if status.suite_relearns:
        last = status.suite_relearns[-1]
        suite += f", relearnt {last['at']} by {last['triggered_by']}: {_short(last['reason'], 90)}"
    print(suite)
    print("history (newest last):")
    for e in status.history[-10:]:
        details = e.get("details") or {}
        if e["action"] == "relearn":
            change = (
                f"quality suite v{details.get('suite_from') or 1} -> v{details.get('suite_to')}"
            )
        elif e.get("from_version") is None:
            change = f"{_v(e['to_version'])} (first champion)"
        else:
            change = f"{_v(e['from_version'])} -> {_v(e['to_version'])}"
        print(
            f"  {e['at']}  {e['action']:9}  {change}  "
            f"by {e['triggered_by']} ({e.get('user') or 'unknown'}): {_short(e.get('reason'))}"
        )
    print("batches:")
    for b in status.batches:
        if b.quality_success is None:
            print(f"  {b.batch}: not validated yet")
            continue
        # A quarantined batch can fire alerts too (a stuck gate), so they are said either way.
        alerts = f"; alerts {', '.join(b.alerts_fired)}" if b.alerts_fired else ""
        if not b.quality_success:
            incidents = ", ".join(b.incidents) or "see its quality report"
            print(
                f"  {b.batch}: QUARANTINED ({incidents}); kept out of scoring and training{alerts}"
            )
            continue
        promoted = {
            None: "",
            True: f"; challenger {_v(b.challenger_version)} promoted",
            False: f"; challenger {_v(b.challenger_version)} rejected",
        }[b.promoted]
        scored = f" (champion {_v(b.champion_version)})" if b.champion_version is not None else ""
        metric = _num(b.metric) if b.metric is not None else "no labels yet"
        print(
            f"  {b.batch}: quality pass; drift {_yes_no(b.dataset_drift)}; "
            f"{name} {metric}{scored}{_served(b.serving)}{promoted}{alerts}"
        )
    return 0


def _served(serving: dict[str, float] | None) -> str:
    """A served batch's online figures, for the status line ("" for other batches)."""
    if serving is None:
        return ""
    latency = "/".join(
        _num(serving.get(f"serving_latency_{p}_ms"), 1) for p in ("p50", "p95", "p99")
    )
    parts = [f"latency p50/p95/p99 {latency} ms"]
    if serving.get("serving_error_rate") is not None:
        parts.append(f"errors {serving['serving_error_rate']:.2%}")
    if serving.get("serving_requests_per_s") is not None:
        parts.append(f"{serving['serving_requests_per_s']:.3g} req/s")
    if serving.get("serving_availability") is not None:
        parts.append(f"availability {serving['serving_availability']:.2%}")
    return "; served " + ", ".join(parts)


def cmd_rollback(args: argparse.Namespace) -> int:
    from mlops_loop.core.steps.rollback import rollback
    from mlops_loop.core.steps.run import StepContext
    from mlops_loop.core.steps.status import require_tracking_store

    who = f"cli ({os.environ.get('USER', 'unknown')})"
    config = _config(args.config)
    require_tracking_store(config)
    change = rollback(config, args.to, args.reason, StepContext(triggered_by=who), force=args.force)
    print(
        f"champion moved from {_v(change.from_version)} to {_v(change.to_version)} "
        f"at {change.at} by {change.triggered_by}: {change.reason}"
    )
    return 0


def cmd_quality_relearn(args: argparse.Namespace) -> int:
    from mlops_loop.core.steps.relearn import relearn_suite
    from mlops_loop.core.steps.run import StepContext

    who = f"cli ({os.environ.get('USER', 'unknown')})"
    config = _config(args.config)
    record = relearn_suite(config, args.reason, args.batch or [], StepContext(triggered_by=who))
    source = "the reference" + (f" and {', '.join(record.batches)}" if record.batches else "")
    print(
        f"quality suite relearnt: v{record.previous_version} -> v{record.version} "
        f"({record.expectations} expectations, from {source}) at {record.at} by "
        f"{record.triggered_by}: {record.reason}"
    )
    if record.quarantined:
        print(
            f"quarantined by the old suite: {', '.join(record.quarantined)}; judge them again "
            "with `mlops-loop quality revalidate` (in Dagster, revalidate_sensor re-runs "
            "monitor_job on them)"
        )
    return 0


def cmd_quality_revalidate(args: argparse.Namespace) -> int:
    from mlops_loop.core.steps.relearn import revalidate
    from mlops_loop.core.steps.run import StepContext

    who = f"cli ({os.environ.get('USER', 'unknown')})"
    results = revalidate(_config(args.config), args.batch or [], StepContext(triggered_by=who))
    if not results:
        print("no quarantined batch to re-validate")
    for r in results:
        verdict = "pass" if r.success else f"QUARANTINED {r.incidents}"
        print(f"  {r.batch}: {verdict} (quality suite v{r.suite_version})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mlops_loop.core.data import read_table
    from mlops_loop.core.steps.scoring import predict_frame
    from mlops_loop.core.steps.status import require_tracking_store

    config = _config(args.config)
    out = _output(args.output, "--output") if args.output else None
    frame = read_table(args.input)
    require_tracking_store(config)
    who = f"cli predict ({os.environ.get('USER', 'unknown')})"
    scored, version = predict_frame(config, frame, who)
    if out is not None:
        if out.suffix.lower() in (".parquet", ".pq"):
            scored.to_parquet(out, index=False)
        else:
            scored.to_csv(out, index=False)
    else:
        scored.to_csv(sys.stdout, index=False)
    print(
        f"scored {len(scored)} rows with {config.mlflow.registered_model}@champion = v{version}"
        + (f"; wrote {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mlops_loop.core.steps.status import require_tracking_store
    from mlops_loop.serving.run import serve

    path = args.config or os.environ.get("MLOPS_LOOP_CONFIG") or DEFAULT_CONFIG
    config = _config(path, check_estimator=False)
    require_tracking_store(config)
    return serve(config, path, host=args.host, port=args.port, workers=args.workers)


def _two_frames(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from mlops_loop.core.data import read_table

    config = _config(args.config) if args.config else None
    return read_table(args.reference), read_table(args.current), config


def _emit(result: Any, args: argparse.Namespace, out: Path | None) -> None:
    text = result.to_html() if args.format == "html" else json.dumps(result.to_dict(), indent=2)
    if out is not None:
        out.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)


def cmd_drift(args: argparse.Namespace) -> int:
    from mlops_loop.core.drift import evaluate_drift

    out = _output(args.output, "--output") if args.output else None
    reference, current, config = _two_frames(args)
    _emit(evaluate_drift(reference, current, config=config), args, out)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from mlops_loop.core.quality import validate_batch

    out = _output(args.output, "--output") if args.output else None
    reference, current, config = _two_frames(args)
    _emit(validate_batch(reference, current, config=config), args, out)
    return 0


def _progress_bar(stream: Any) -> Any:
    """A one-line progress bar on `stream` when it is a terminal; None otherwise."""
    if not stream.isatty():
        return None

    def show(done: int, total: int, key: str) -> None:
        filled = round(30 * done / total)
        end = "\n" if done == total else ""
        stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {key[:40]:40}{end}")
        stream.flush()

    return show


def cmd_backtest(args: argparse.Namespace) -> int:
    from mlops_loop.core.backtest import backtest

    config = _config(args.config)
    result = backtest(
        config,
        args.batches,
        args.reference,
        state_dir=args.state,
        mlflow_uri=args.mlflow_uri,
        progress=_progress_bar(sys.stderr),
    )
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.to_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops-loop",
        description="A self-driving retraining loop for scikit-learn models on Dagster + MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = f"loop YAML (default: $MLOPS_LOOP_CONFIG or {DEFAULT_CONFIG})"

    p = sub.add_parser("demo", help="run the scripted scenario end to end through Dagster")
    p.add_argument("--workdir", default=".demo", help="where the demo data and state go")
    p.add_argument(
        "--dagster-home", help="Dagster instance folder (default: $DAGSTER_HOME or ./dagster_home)"
    )
    p.add_argument("--keep", action="store_true", help="do not reset earlier demo state")
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="only write the demo's config, reference and batch files (to run them through "
        "another orchestrator, such as Airflow)",
    )
    p.add_argument(
        "--no-backtest",
        action="store_true",
        help="skip the closing backtest (a replay of the same stream through the core steps)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="champion, challenger, history and batch verdicts")
    p.add_argument("--config", help=config_help)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--plot", metavar="PATH", help="also write an SVG timeline of performance and drift"
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("rollback", help="move the champion back to a version or 'previous'")
    p.add_argument(
        "--to",
        required=True,
        help="version number, or 'previous': the champion before the current one "
        "(a second 'previous' undoes the first)",
    )
    p.add_argument("--reason", required=True, help="why (kept in the audit history)")
    p.add_argument(
        "--force",
        action="store_true",
        help="also roll back to a version that was never champion (a rejected challenger)",
    )
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("quality", help="the quality gate's suite: relearn it, re-validate")
    quality = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = quality.add_parser(
        "relearn",
        help="learn the suite again from the reference and named batches (the old one is kept)",
        description="Learn the quality suite again from the reference and the batches named "
        "(accepted ones, or quarantined ones that show the upstream's new shape). The old "
        "suite is kept under snapshot/suites/; who, when and why go to MLflow and the history.",
    )
    p.add_argument("--reason", required=True, help="why (kept in the audit history)")
    p.add_argument(
        "--batch",
        action="append",
        metavar="KEY",
        help="a batch to learn from as well as the reference (repeat for more)",
    )
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_quality_relearn)
    p = quality.add_parser(
        "revalidate", help="judge quarantined batches (or the named ones) with the suite now"
    )
    p.add_argument("--batch", action="append", metavar="KEY", help="only this batch (repeat)")
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_quality_revalidate)

    p = sub.add_parser("predict", help="score a file with the model `champion` points at now")
    p.add_argument("input", help="rows to score (parquet or CSV)")
    p.add_argument("--output", help="write here (.parquet or .csv) instead of CSV on stdout")
    p.add_argument("--config", help=config_help)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "serve",
        help="score HTTP requests with the model `champion` points at, following the alias",
        description="Serve MLflow's scoring protocol (POST /invocations) with the model the "
        "champion alias names, swapping in a new champion without a restart; /health, /ready, "
        "/version and /metrics beside it. Every answer goes to the prediction log, which lands "
        "as batch files the loop monitors. Flags override the config's serving: section.",
    )
    p.add_argument("--config", help=config_help)
    p.add_argument("--host", help="interface to bind (default: serving.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: serving.port, 8080)")
    p.add_argument("--workers", type=int, help="server processes (default: serving.workers, 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "backtest",
        help="replay the loop over a folder of historical batches to try a policy",
        description="Replay the loop's own steps over the batch files of BATCHES in name order, "
        "prequentially: each batch is validated, drift-tested and scored by the model in "
        "service before its labels are used for the retrain decision and for training. Runs "
        "on a state folder of its own; the loop's real state is never touched.",
    )
    p.add_argument("--config", help=config_help)
    p.add_argument(
        "--reference", help="labelled reference data (default: the config's sources.reference)"
    )
    p.add_argument(
        "--batches", required=True, help="folder of labelled batch files (parquet or CSV)"
    )
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--mlflow-uri", help="record to this MLflow tracking URI (default: SQLite in the state)"
    )
    p.add_argument(
        "--state", help="keep the replay's state in this new or empty folder (default: temporary)"
    )
    p.set_defaults(func=cmd_backtest)

    for name, func, what in (
        ("drift", cmd_drift, "drift report of CURRENT against REFERENCE"),
        ("validate", cmd_validate, "quality gate of CURRENT against a suite learnt from REFERENCE"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("reference", help="reference data (parquet or CSV)")
        p.add_argument("current", help="current batch (parquet or CSV)")
        p.add_argument("--config", help="loop YAML naming the columns' roles")
        p.add_argument("--format", choices=["json", "html"], default="json")
        p.add_argument("--output", help="write here instead of standard output")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MlopsLoopError as e:
        print(f"mlops-loop {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
