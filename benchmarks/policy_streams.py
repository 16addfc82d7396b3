"""How well a retrain/promotion policy serves five kinds of stream, replayed by the backtest.

Streams (seeded, from the demo's churn generator; 2,000 reference rows, 6 batches):

- `none`       : every batch like the reference (a good policy never retrains);
- `covariate`  : 2 normal batches, then 4 with older customers from the west (same concept);
- `abrupt`     : 2 normal batches, then 4 where heavy users churn instead (a new concept);
- `gradual`    : the new concept's share of each batch 0, 20, 40, 60, 80, 100 %;
- `recurring`  : old and new concept alternating batch by batch.

Each stream is replayed (`mlops_loop.core.backtest.backtest`, the code the Dagster assets run)
under each policy; the table shows the mean realized metric of the model in service, retrains
and promotions, and per batch the metric. The baseline is `previous`: the policy the loop
shipped before its defaults were tuned on these streams (training on all history plus the
reference, the drop measured from the serving champion's own validation, no skill check).
`all+ref`, `recent3` and `sliding2k` try other training windows under the default rules.

    .venv/bin/python benchmarks/policy_streams.py [--rows 800] [--streams none,abrupt] \
        [--policies previous,defaults] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlops_loop.core.backtest import backtest
from mlops_loop.core.config import load_config
from mlops_loop.demo.data import make_frame

BATCHES = 6
SHARES: dict[str, list[float]] = {
    "none": [0, 0, 0, 0, 0, 0],
    "covariate": [0, 0, 0, 0, 0, 0],
    "abrupt": [0, 0, 1, 1, 1, 1],
    "gradual": [0, 0.2, 0.4, 0.6, 0.8, 1],
    "recurring": [0, 1, 0, 1, 0, 1],
}

#: Policy sections that differ from the package's defaults. `defaults` sets nothing.
POLICIES: dict[str, dict[str, Any]] = {
    "previous": {
        "retrain": {"baseline": "champion"},
        "training": {"window": "all", "include_reference": True},
        "promotion": {"require_skill": False},
    },
    "defaults": {},
    # Other training windows, with the default retrain and promotion rules.
    "all+ref": {"training": {"window": "all", "include_reference": True}},
    "recent3": {"training": {"recent_batches": 3}},
    "sliding2k": {"training": {"window": "sliding", "max_rows": 2000}},
}


def stream(kind: str, rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-05")
    reference = make_frame(rng, 2000, start=t0, id_offset=1)
    batches = {}
    for i, share in enumerate(SHARES[kind]):
        batches[f"b{i + 1:02d}"] = make_frame(
            rng,
            rows,
            start=t0 + pd.Timedelta(days=7 * (i + 1)),
            id_offset=10_000 * (i + 1),
            covariate_shift=kind == "covariate" and i >= 2,
            new_concept_share=share,
        )
    return reference, batches


def loop_yaml(root: Path, policy: dict[str, Any]) -> Path:
    """The demo's loop config with its policy sections removed (package defaults), then
    `policy` applied; a lighter model and bootstrap keep the replay quick."""
    doc = yaml.safe_load(
        importlib.resources.files("mlops_loop.demo").joinpath("loop.yaml").read_text()
    )
    for section in ("retrain", "training"):
        doc.pop(section, None)
    doc["promotion"] = {"metric": "roc_auc", "bootstrap_rounds": 200}
    doc["model"]["params"]["max_iter"] = 80
    doc["alerts"] = {}
    doc["columns"].pop("label_time", None)
    for section, values in policy.items():
        doc.setdefault(section, {}).update(values)
    doc["sources"] = {"reference": str(root / "reference.parquet"), "landing": str(root / "in")}
    doc["state_dir"] = str(root / "state")
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def replay(kind: str, policy_name: str, rows: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="policy-streams-") as tmp:
        root = Path(tmp)
        reference, batches = stream(kind, rows, seed)
        reference.to_parquet(root / "reference.parquet", index=False)
        (root / "history").mkdir()
        for key, frame in batches.items():
            frame.to_parquet(root / "history" / f"{key}.parquet", index=False)
        config = load_config(loop_yaml(root, POLICIES[policy_name]))
        started = time.perf_counter()
        result = backtest(config, root / "history", root / "reference.parquet")
        seconds = time.perf_counter() - started
    out = result.to_dict()
    summary = out["summary"]
    return {
        "stream": kind,
        "policy": policy_name,
        "mean_metric": summary["mean_metric"],
        "retrains": summary["retrains"],
        "promotions": summary["promotions"],
        "metrics": [b["metric"] for b in out["batches"]],
        "retrained": [b["retrained"] for b in out["batches"]],
        "promoted": [b["promoted"] for b in out["batches"]],
        "seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800, help="rows per batch")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--streams", default=",".join(SHARES))
    parser.add_argument("--policies", default="previous,defaults", help=f"of {sorted(POLICIES)}")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    for given, known in ((args.streams, SHARES), (args.policies, POLICIES)):
        unknown = sorted(set(given.split(",")) - set(known))
        if unknown:
            parser.error(f"unknown {unknown}; expected some of {sorted(known)}")
    import mlflow  # noqa: F401  (its import sets its loggers' levels: quiet them afterwards)

    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    results = []
    for kind in args.streams.split(","):
        for name in args.policies.split(","):
            r = replay(kind, name, args.rows, args.seed)
            results.append(r)
            marks = " ".join(
                f"{m:.2f}{'R' if t else ''}{'P' if p else ''}" if m is not None else "  -  "
                for m, t, p in zip(r["metrics"], r["retrained"], r["promoted"], strict=True)
            )
            print(
                f"{kind:10} {name:9} mean AUC {r['mean_metric']:.3f}  retrains {r['retrains']}  "
                f"promotions {r['promotions']}  | {marks}  ({r['seconds']} s)",
                flush=True,
            )
    print("\nper batch: realized ROC AUC of the model in service; R retrained, P promoted")
    by = {(r["stream"], r["policy"]): r for r in results}
    names = args.policies.split(",")
    if "previous" in names:
        for other in (n for n in names if n != "previous"):
            print(f"\n{other} vs previous (mean AUC difference, retrains):")
            for kind in args.streams.split(","):
                a, b = by[(kind, other)], by[(kind, "previous")]
                print(
                    f"  {kind:10} {a['mean_metric'] - b['mean_metric']:+.3f}   "
                    f"retrains {a['retrains']} vs {b['retrains']}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
