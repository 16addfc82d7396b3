"""Calibration of the dataset-level drift decision, by seeded simulation.

Nine features of varied shapes (normal, skewed, discrete, uniform, heavy-tailed, bimodal; three
categorical ones with 3, 8 and 40 categories) and a 50,000-row reference. With the default
policy (multivariate check included):

- false alarms: batches drawn from the reference's population raise dataset drift in at most 5%
  of the batches, with margin: the measured rate must be <= 3% (where alarms cannot happen at
  all, the largest distances seen must also stay far below the thresholds);
- power: a mean shift that moves one feature's population KS distance by 0.15 is dataset drift
  in >= 95% of the batches (and the 95% Clopper-Pearson lower bound must be >= 90%);
- a moderate covariate shift of 0.3 standard deviations in 2 of the 9 features is dataset drift.

docs/drift.md lists the rates measured with many more repetitions (`python
tests/core/test_drift_calibration.py`), where the one-sided 95% Clopper-Pearson upper bound of
each rate is <= 5%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_loop.core.config import DriftPolicy
from mlops_loop.core.drift import DriftReport, evaluate_drift

N_REFERENCE = 50_000
PLANS = np.array(["basic", "plus", "pro"], dtype=object)
REGIONS = np.array([f"region_{i}" for i in range(8)], dtype=object)
PRODUCTS = np.array([f"product_{i:02d}" for i in range(40)], dtype=object)
ZIPF = 1 / np.arange(1, 41) / (1 / np.arange(1, 41)).sum()
UNIFORM_SD = 10 / np.sqrt(12)


def population(rng: np.random.Generator, n: int, shift: dict[str, float] | None = None):
    """`n` rows of the monitored population; `shift` adds a constant to numerical features."""
    shift = shift or {}

    def plus(name: str) -> float:
        return shift.get(name, 0.0)

    bimodal = np.where(rng.random(n) < 0.3, rng.normal(-2.0, 0.5, n), rng.normal(1.0, 1.0, n))
    return pd.DataFrame(
        {
            "normal": rng.normal(0.0, 1.0, n) + plus("normal"),
            "skewed": rng.lognormal(0.0, 0.8, n) + plus("skewed"),
            "count": rng.poisson(3.0, n) + plus("count"),  # discrete: heavy ties
            "uniform": rng.uniform(0.0, 10.0, n) + plus("uniform"),
            "heavy": rng.standard_t(3, n) + plus("heavy"),
            "bimodal": bimodal + plus("bimodal"),
            "plan": pd.array(PLANS[rng.choice(3, n, p=[0.5, 0.3, 0.2])], dtype="str"),
            "region": pd.array(REGIONS[rng.integers(0, 8, n)], dtype="str"),
            "product": pd.array(PRODUCTS[rng.choice(40, n, p=ZIPF)], dtype="str"),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return population(np.random.default_rng(2024), N_REFERENCE)


def upper_bound(alarms: int, trials: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a binomial rate."""
    return 1.0 if alarms == trials else float(stats.beta.ppf(0.95, alarms + 1, trials - alarms))


def lower_bound(hits: int, trials: int) -> float:
    """One-sided 95% Clopper-Pearson lower bound of a binomial rate."""
    return 0.0 if hits == 0 else float(stats.beta.ppf(0.05, hits, trials - hits + 1))


def simulate(
    reference: pd.DataFrame, n: int, reps: int, seed: int, shift: dict[str, float] | None = None
) -> list[DriftReport]:
    rng = np.random.default_rng(seed)
    return [evaluate_drift(reference, population(rng, n, shift)) for _ in range(reps)]


def largest_effects(reports: list[DriftReport]) -> tuple[float, float, float]:
    """The largest KS distance, total-variation distance and domain-classifier AUC seen."""
    ks = max(f.effect_size or 0.0 for r in reports for f in r.features if f.kind == "numerical")
    tv = max(f.effect_size or 0.0 for r in reports for f in r.features if f.kind == "categorical")
    auc = max(r.multivariate.auc or 0.0 for r in reports if r.multivariate is not None)
    return ks, tv, auc


def normal_ks(report: DriftReport) -> float:
    return next(f.effect_size or 0.0 for f in report.features if f.name == "normal")


def test_the_simulated_reference_has_the_intended_shapes(reference: pd.DataFrame) -> None:
    numeric = [c for c in reference.columns if pd.api.types.is_numeric_dtype(reference[c])]
    assert len(numeric) == 6 and reference.shape == (N_REFERENCE, 9)
    assert stats.skew(reference["skewed"]) > 1.5  # right-skewed
    assert stats.kurtosis(reference["heavy"]) > 3  # heavy tails
    assert reference["count"].nunique() < 20  # discrete: heavy ties
    assert reference["product"].value_counts(normalize=True).iloc[-1] < 0.01  # sparse tail


# ---------------------------------------------------------------- false alarms


@pytest.mark.parametrize(
    "n, reps",
    [
        # Small batches: the p-values decide (a significant KS or TV distance nearly always
        # clears the 0.1 thresholds), so the rate is at most about fdr + multivariate_alpha =
        # 0.01 + 0.005 (BH across the 9 features is then a Simes test, at most fdr under the
        # global null). 100 batches: 3 alarms pass; at a true rate of 1% more than 3 happen
        # with probability 1.8%.
        (100, 100),
        # The numerical features are out of reach (D >= 0.1 needs sqrt(n_eff) D = 3.1 with
        # n_eff = 980, probability 2 exp(-2 * 3.1^2) = 1e-8 each), the categorical ones need a
        # significant test *and* TV >= 0.1, which is the edge of their noise here, and the
        # classifier's 500 + 2,000 held-out rows put AUC 0.55 at 3.5 null standard deviations
        # (probability 3e-4). 1,000 batches gave one alarm (docs/drift.md), so 20 batches
        # without one (3% of 20 is less than one) happen with probability 98%.
        (1_000, 20),
        # Out of reach for every part. KS: n_eff = 1e4 * 5e4 / 6e4 = 8,333, D >= 0.1 means
        # sqrt(n_eff) D >= 9.1, probability 2 exp(-2 * 9.1^2) = 1e-72 per feature. TV: the
        # sampling noise of the 40-category feature is about 0.5 * sqrt(2 / (pi n_eff)) *
        # sum_k sqrt(p_k) = 0.02. Classifier: 2,500 + 2,500 held-out rows give the AUC a null
        # standard deviation of sqrt(5001 / (12 * 2500^2)) = 0.008, so 0.55 is 6 of them away
        # (probability 1e-9). So a few batches suffice, and the margin is shown by the
        # largest distances seen.
        (10_000, 8),
    ],
)
def test_false_alarm_rate_is_at_most_5_percent_with_margin(
    reference: pd.DataFrame, n: int, reps: int
) -> None:
    reports = simulate(reference, n, reps, seed=n)
    alarms = sum(r.dataset_drift for r in reports)
    assert alarms / reps <= 0.03, f"{alarms} alarms in {reps} batches of {n} rows"
    assert all(r.multivariate is not None and r.multivariate.error is None for r in reports)
    if n >= 10_000:
        ks, tv, auc = largest_effects(reports)
        assert ks < 0.05 and tv < 0.05 and auc < 0.53, (ks, tv, auc)


@pytest.mark.slow
def test_false_alarm_rate_of_small_batches_has_an_upper_bound_below_5_percent(
    reference: pd.DataFrame,
) -> None:
    # Where alarms can happen at all, enough batches for the bound itself: with 400 the one-sided
    # 95% Clopper-Pearson upper bound stays <= 5% up to 12 alarms (3%); about 5 are expected
    # (more than 12 at the measured 1.15%: probability 3e-4).
    reports = simulate(reference, 100, 400, seed=99)
    alarms = sum(r.dataset_drift for r in reports)
    assert upper_bound(alarms, 400) <= 0.05, f"{alarms} alarms in 400 batches"
    # Each part stays near its level (fdr 0.01, multivariate_alpha 0.005); beyond 12 and 8
    # alarms out of 400 the chance is 3e-4 and 2e-4.
    assert sum("features" in r.triggered_by for r in reports) <= 12
    assert sum("multivariate" in r.triggered_by for r in reports) <= 8


@pytest.mark.slow
@pytest.mark.parametrize(
    "n, reps",
    [
        # Structurally impossible, as for 10,000 rows but further: KS n_eff = 33,333 (D >= 0.1
        # is sqrt(n_eff) D >= 18, probability 1e-282), TV noise about 0.01, and the classifier
        # sees the same 5,000 + 5,000 sampled rows whatever the batch size (AUC 0.55 is 6
        # standard deviations away). A handful of batches confirms the margin in the observed
        # distances rather than in a count of zero alarms.
        (100_000, 20),
        # n_eff = 47,619: sqrt(n_eff) D >= 21.8 for D >= 0.1 (probability 1e-413).
        (1_000_000, 5),
    ],
)
def test_false_alarms_are_out_of_reach_in_large_batches(
    reference: pd.DataFrame, n: int, reps: int
) -> None:
    reports = simulate(reference, n, reps, seed=n)
    assert not any(r.dataset_drift for r in reports)
    ks, tv, auc = largest_effects(reports)
    assert ks < 0.03 and tv < 0.03 and auc < 0.53, (ks, tv, auc)
    assert all(r.multivariate.n_current == 5000 for r in reports)  # type: ignore[union-attr]


# ---------------------------------------------------------------- power

# A mean shift of a normal by delta moves its population KS distance to 2 Phi(delta / 2) - 1.
KS_SHIFT = 0.15
DELTA = 2 * stats.norm.ppf((1 + KS_SHIFT) / 2)  # 0.378 standard deviations


def test_the_shift_moves_the_population_ks_distance_by_0_15() -> None:
    grid = np.linspace(-8, 8, 160_001)
    distance = np.max(np.abs(stats.norm.cdf(grid) - stats.norm.cdf(grid - DELTA)))
    assert distance == pytest.approx(KS_SHIFT, abs=1e-6)
    assert DELTA == pytest.approx(0.378, abs=1e-3)


@pytest.mark.parametrize("n, reps", [(2_000, 12), (10_000, 5)])
def test_a_ks_shift_of_0_15_in_one_feature_is_detected(
    reference: pd.DataFrame, n: int, reps: int
) -> None:
    reports = simulate(reference, n, reps, seed=n + 1, shift={"normal": DELTA})
    hits = sum(r.dataset_drift for r in reports)
    assert hits / reps >= 0.95, f"{hits} of {reps}"
    # The feature rule alone suffices (the classifier usually fires too).
    assert all("features" in r.triggered_by and r.drifted_features == ["normal"] for r in reports)
    # 12 hits of 12 only bound the rate below by 0.05^(1/12) = 78%; the KS distance shows the
    # margin: its sampling noise is about 0.5 / sqrt(n) (0.011 at 2,000 rows), so 0.15 lies 4.5
    # of those above the 0.1 threshold (a miss rate near 3e-6), and the smallest distance seen
    # must clear the threshold by three.
    smallest = min(normal_ks(r) for r in reports)
    assert smallest >= 0.1 + 3 * 0.5 / np.sqrt(n)


@pytest.mark.slow
def test_a_ks_shift_of_0_15_is_detected_in_large_batches(reference: pd.DataFrame) -> None:
    # At 100,000 rows the KS distance's noise is about 0.5 / sqrt(n_eff) = 0.0027 around 0.15:
    # missing the 0.1 threshold would take an 18-sigma deviation, so ten batches suffice.
    reports = simulate(reference, 100_000, 10, seed=3, shift={"normal": DELTA})
    assert all(r.dataset_drift and r.drifted_features == ["normal"] for r in reports)
    assert all(abs(normal_ks(r) - KS_SHIFT) < 0.01 for r in reports)


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_a_covariate_shift_in_two_of_nine_features_is_dataset_drift(
    reference: pd.DataFrame, n: int
) -> None:
    # 0.3 standard deviations each: KS distance 2 Phi(0.15) - 1 = 0.119 for the normal one,
    # shift / width = 0.3 * 2.89 / 10 = 0.087 for the uniform one (below the threshold alone).
    shift = {"normal": 0.3, "uniform": 0.3 * UNIFORM_SD}
    reports = simulate(reference, n, 5, seed=n + 2, shift=shift)
    assert all(r.dataset_drift for r in reports)
    # Both rules see it in most batches; the classifier on the two features together.
    assert sum("multivariate" in r.triggered_by for r in reports) >= 4
    assert sum("features" in r.triggered_by for r in reports) >= 4
    for r in reports:
        assert set(r.drifted_features) <= {"normal", "uniform"}
        mv = r.multivariate
        assert mv is not None and mv.drifted == ("multivariate" in r.triggered_by)
        if mv.drifted:
            assert mv.top_features[0]["name"] in {"normal", "uniform"}


def main() -> None:
    """Print the false-alarm rates over many more batches than the tests run (see docs/drift.md).

    `python tests/core/test_drift_calibration.py [REPS_AT_100_ROWS] [classifier]`; larger
    batches get fewer repetitions, where alarms are out of reach. With `classifier`, the
    rejection rates of the multivariate check alone at several levels, in batches of 100 rows.
    """
    import sys
    import time

    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ref = population(np.random.default_rng(2024), N_REFERENCE)
    if sys.argv[2:] == ["classifier"]:
        from mlops_loop.core.drift.multivariate import domain_classifier_drift

        rng = np.random.default_rng(5)
        kinds = {c: pd.api.types.is_numeric_dtype(ref[c]) for c in ref.columns}
        numerical = [c for c, numeric in kinds.items() if numeric]
        categorical = [c for c, numeric in kinds.items() if not numeric]
        p_values = np.array(
            [
                domain_classifier_drift(
                    ref, population(rng, 100), numerical, categorical, seed=s
                ).p_value
                for s in range(reps)
            ]
        )
        for alpha in (0.2, 0.1, 0.05, 0.01, 0.005):
            print(f"alpha {alpha}: rejected {np.mean(p_values <= alpha):.2%} of {reps} batches")
        return
    print(f"reference: {N_REFERENCE:,} rows; default DriftPolicy: {DriftPolicy()!r}")
    print("rows | batches | alarms | by features | by multivariate | rate | 95% upper bound")
    plan = [(100, reps), (1_000, reps // 2), (10_000, reps // 10), (100_000, 20), (1_000_000, 5)]
    for n, r in plan:
        start = time.perf_counter()
        reports = simulate(ref, n, r, seed=10 * n + 1)
        alarms = sum(x.dataset_drift for x in reports)
        by_features = sum("features" in x.triggered_by for x in reports)
        by_classifier = sum("multivariate" in x.triggered_by for x in reports)
        ks, tv, auc = largest_effects(reports)
        print(
            f"{n:,} | {r} | {alarms} | {by_features} | {by_classifier} | {alarms / r:.2%} | "
            f"{upper_bound(alarms, r):.2%} (largest KS {ks:.3f}, TV {tv:.3f}, AUC {auc:.3f}; "
            f"{(time.perf_counter() - start) / r:.2f} s per batch)",
            flush=True,
        )


if __name__ == "__main__":
    main()
