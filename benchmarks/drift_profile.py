"""`evaluate_drift` against a cached `ReferenceProfile` vs against the reference DataFrame, on
the data of `drift_speed.py` (1M reference rows, 1M current rows, 16 numeric + 4 categorical
columns). The profile holds the reference sorted and counted once, so each evaluation only
sorts and counts the batch. Run with `.venv/bin/python benchmarks/drift_profile.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from drift_speed import N_ROWS, SEED, make_frame  # noqa: E402

from mlops_loop.core.drift import ReferenceProfile, evaluate_drift  # noqa: E402

REPEATS = 5


def main() -> None:
    rng = np.random.default_rng(SEED)
    reference = make_frame(rng, N_ROWS, drift=0.0)
    current = make_frame(rng, N_ROWS, drift=0.15)
    print(f"data: {N_ROWS:,} reference + {N_ROWS:,} current rows x {reference.shape[1]} columns")

    start = time.perf_counter()
    profile = ReferenceProfile.from_frame(reference)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        profile.save(Path(tmp) / "profile")
        save_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "profile").iterdir()) / 2**20
        start = time.perf_counter()
        loaded = ReferenceProfile.load(Path(tmp) / "profile")
        load_s = time.perf_counter() - start

    # Alternate the two paths so that neither profits from a warmer machine.
    frame_times: list[float] = []
    profile_times: list[float] = []
    for _ in range(REPEATS):
        for times, ref in ((frame_times, reference), (profile_times, loaded)):
            start = time.perf_counter()
            report = evaluate_drift(ref, current)
            times.append(time.perf_counter() - start)
    same = evaluate_drift(reference, current).to_dict() == report.to_dict()

    frame_s, profile_s = statistics.median(frame_times), statistics.median(profile_times)
    print(
        f"profile: built in {build_s:.2f} s (digest included), saved in {save_s:.2f} s "
        f"({size_mb:,.0f} MiB on disk), loaded in {load_s:.2f} s"
    )
    print(f"evaluate_drift, DataFrame reference:  {frame_s:6.2f} s (median of {REPEATS})")
    print(f"evaluate_drift, cached profile:       {profile_s:6.2f} s (median of {REPEATS})")
    print(f"speed-up per batch: {frame_s / profile_s:.2f}x; reports identical: {same}")
    print(
        "profile pays off after "
        f"{(build_s + save_s) / max(frame_s - profile_s, 1e-9):.1f} batches (build + save once)"
    )


if __name__ == "__main__":
    main()
