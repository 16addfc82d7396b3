"""Model logging: pinned pip requirements (the loop's way) vs MLflow's inference (the default).

MLflow infers a model's requirements by reloading it in a subprocess; the loop pins them from
the installed versions instead. Prints seconds per logged+registered model and the ratio.

    .venv/bin/python benchmarks/model_logging.py [--rounds 3]
"""

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import mlflow.sklearn

from mlops_loop.core.config import parse_config
from mlops_loop.core.steps.models import pip_requirements
from mlops_loop.core.training import model_inputs, train_model
from mlops_loop.demo.data import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    reference, _ = generate(seed=1, reference_rows=3000)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "columns": {
                    "numerical": [
                        "age",
                        "income",
                        "tenure_months",
                        "sessions_per_week",
                        "support_tickets",
                    ],
                    "categorical": ["region", "plan", "device"],
                    "target": "churned",
                },
                "sources": {"reference": "r.parquet", "landing": "l"},
                "state_dir": tmp,
            },
            base=Path(tmp),
        )
        model = train_model(reference, config.model, config.columns)
        example = model_inputs(reference.head(5), config.columns)
        mlflow.set_tracking_uri(config.tracking_uri)
        times: dict[str, list[float]] = {"inferred (MLflow default)": [], "pinned (mlops-loop)": []}
        for _ in range(args.rounds):
            for label, reqs in (
                ("inferred (MLflow default)", None),
                ("pinned (mlops-loop)", pip_requirements(config)),
            ):
                with mlflow.start_run():
                    t0 = time.perf_counter()
                    mlflow.sklearn.log_model(
                        model,
                        name="model",
                        input_example=example,
                        serialization_format="cloudpickle",
                        registered_model_name="bench",
                        pip_requirements=reqs,
                    )
                    times[label].append(time.perf_counter() - t0)
    print(f"log + register one HistGradientBoosting pipeline, median of {args.rounds} rounds")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for label, value in medians.items():
        print(f"  {label:28} {value:7.3f} s")
    base, ours = medians.values()
    print(f"  speed-up: {base / ours:.1f}x")


if __name__ == "__main__":
    main()
