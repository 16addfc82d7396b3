import numpy as np
import pytest

from mlops_loop.core.config import PromotionPolicy, RetrainPolicy
from mlops_loop.core.policy import decide_promotion, decide_retrain

POLICY = RetrainPolicy(metric_drop=0.05, min_labelled_rows=100, cooldown_batches=2)


def test_no_trigger_means_no_retrain():
    d = decide_retrain(
        policy=POLICY, dataset_drift=False, metric=0.80, baseline_metric=0.82, labelled_rows=500
    )
    assert not d.retrain and d.triggers == []


def test_drift_and_performance_drop_trigger_with_reasons():
    d = decide_retrain(
        policy=POLICY,
        dataset_drift=True,
        drifted_features=["age"],
        metric=0.70,
        baseline_metric=0.80,
        labelled_rows=500,
    )
    assert d.retrain and d.triggers == ["drift", "performance"]
    assert "data drift in age" in d.reasons[0]
    assert "roc_auc fell to 0.7000 from a baseline of 0.8000" in d.reasons[1]


def test_lower_is_better_metric_drop():
    d = decide_retrain(
        policy=POLICY,
        dataset_drift=False,
        metric_name="brier",
        metric=0.30,
        baseline_metric=0.20,
        labelled_rows=500,
    )
    assert d.retrain and d.triggers == ["performance"]


def test_too_few_labels_are_not_judged():
    d = decide_retrain(
        policy=POLICY, dataset_drift=False, metric=0.5, baseline_metric=0.8, labelled_rows=20
    )
    assert not d.retrain and "only 20 labelled rows" in d.reasons[0]


def test_quarantined_batch_never_triggers():
    d = decide_retrain(policy=POLICY, dataset_drift=True, quality_passed=False, force=True)
    assert not d.retrain and "quality gate" in d.reasons[0]


def test_cooldown_blocks_unless_forced():
    d = decide_retrain(policy=POLICY, dataset_drift=True, batches_since_retrain=1)
    assert not d.retrain and "cooldown" in d.reasons[-1]
    assert decide_retrain(
        policy=POLICY, dataset_drift=True, batches_since_retrain=1, force=True
    ).retrain


def _scores(rng, y, noise):
    return np.clip(y * 0.5 + 0.25 + rng.normal(0, noise, len(y)), 0, 1)


def test_clearly_better_challenger_is_promoted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    d = decide_promotion(y, _scores(rng, y, 0.2), _scores(rng, y, 0.6), PromotionPolicy())
    assert d.promote and d.delta > 0 and d.ci_low > 0
    assert d.challenger == pytest.approx(d.champion + d.delta)


def test_equal_models_are_rejected_as_luck():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    same = _scores(rng, y, 0.5)
    d = decide_promotion(y, same + rng.normal(0, 0.01, 600), same, PromotionPolicy())
    assert not d.promote
    assert any("not above zero" in r or "below min_delta" in r for r in d.reasons)


def test_no_champion_promotes_and_single_class_does_not():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8])
    assert decide_promotion(y, s, None, PromotionPolicy()).promote
    d = decide_promotion(np.zeros(4, int), s, s, PromotionPolicy())
    assert not d.promote and "undefined" in d.reasons[0]


def test_metric_floor_triggers_even_when_baseline_is_low():
    policy = RetrainPolicy(metric_drop=0.05, metric_floor=0.75)
    d = decide_retrain(
        policy=policy, dataset_drift=False, metric=0.56, baseline_metric=0.55, labelled_rows=1000
    )
    assert d.retrain and d.triggers == ["performance"]
    assert "worse than the floor 0.75" in d.reasons[0]
    assert not decide_retrain(
        policy=policy, dataset_drift=False, metric=0.80, baseline_metric=0.82, labelled_rows=1000
    ).retrain


def test_a_worse_guard_metric_blocks_promotion():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    champ = _scores(rng, y, 0.5)
    # Same ranking made sharper but shifted up: AUC gains, calibration (Brier) collapses.
    chal = np.clip(_scores(rng, y, 0.3) * 0.4 + 0.6, 0, 1)
    policy = PromotionPolicy(guards={"brier": 0.01})
    d = decide_promotion(y, chal, champ, policy)
    assert d.delta > 0 and d.ci_low > 0
    assert not d.promote
    [guard] = d.guards
    assert guard["metric"] == "brier" and guard["ok"] is False
    assert any(r.startswith("guard brier is worse") for r in d.reasons)


def test_a_worse_segment_blocks_promotion():
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, n)
    region = rng.choice(["north", "south", "west"], n)
    champ = _scores(rng, y, 0.55)
    chal = _scores(rng, y, 0.2)
    west = region == "west"
    chal[west] = rng.random(west.sum())  # the challenger is useless in the west
    policy = PromotionPolicy(guards={})
    d = decide_promotion(y, chal, champ, policy, segments={"region": region})
    assert not d.promote
    bad = [s for s in d.segments if not s["ok"]]
    assert [s["where"] for s in bad] == ["region=west"]
    assert any("segment region=west" in r for r in d.reasons)
    # Without the segment check the same challenger would have been promoted overall.
    assert decide_promotion(y, chal, champ, policy).promote


def test_small_segments_are_not_judged():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 1000)
    region = np.array(["big"] * 980 + ["tiny"] * 20)
    champ, chal = _scores(rng, y, 0.6), _scores(rng, y, 0.2)
    d = decide_promotion(y, chal, champ, PromotionPolicy(guards={}), segments={"region": region})
    assert [s["where"] for s in d.segments] == ["region=big"]


def test_an_estimated_drop_triggers_before_labels_arrive():
    policy = RetrainPolicy(metric_drop=0.05)
    decision = decide_retrain(
        policy=policy, dataset_drift=False, baseline_metric=0.85, estimated_metric=0.78
    )
    assert decision.retrain and decision.triggers == ["estimated_performance"]
    assert "estimated roc_auc (from scores, without labels) fell to 0.7800" in decision.reasons[0]
    small = decide_retrain(
        policy=policy, dataset_drift=False, baseline_metric=0.85, estimated_metric=0.82
    )
    off = decide_retrain(
        policy=RetrainPolicy(on_estimated_drop=False),
        dataset_drift=False,
        baseline_metric=0.85,
        estimated_metric=0.5,
    )
    assert not small.retrain and not off.retrain


def test_too_few_new_labels_hold_a_retrain_back_unless_forced():
    policy = RetrainPolicy(min_new_labelled_rows=500)
    args = dict(policy=policy, dataset_drift=True, drifted_features=["age"])
    held = decide_retrain(**args, new_labelled_rows=120)
    assert not held.retrain and held.triggers == ["drift"]
    assert "only 120 labelled rows arrived since the last retrain (< 500)" in held.reasons[-1]
    assert decide_retrain(**args, new_labelled_rows=800).retrain
    assert decide_retrain(**args, new_labelled_rows=120, force=True).retrain


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy"])
def test_a_challenger_without_skill_is_refused_however_bad_the_champion(metric):
    """A collapse (the champion's scores now point the wrong way) must not hand the serving
    slot to a model that is itself worse than a constant score."""
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(int)
    champion = _scores(rng, 1 - y, 0.3)  # confidently wrong
    challenger = _scores(rng, 1 - y, 1.5)  # wrong too, just less so
    policy = PromotionPolicy(metric=metric, guards={})
    d = decide_promotion(y, challenger, champion, policy)
    assert d.delta > 0 and d.ci_low > 0  # it does beat the champion, with confidence
    assert not d.promote
    assert any("no better than a model without skill" in r for r in d.reasons), d.reasons
    unchecked = decide_promotion(
        y, challenger, champion, policy.model_copy(update={"require_skill": False})
    )
    assert unchecked.promote


HOLDS = dict(dataset_drift=True, drifted_features=["x4", "x5"])  # labels not arrived yet


def test_drift_whose_estimate_holds_trains_nothing_and_says_so():
    d = decide_retrain(
        policy=RetrainPolicy(),
        baseline_metric=0.92,
        estimated_metric=0.90,
        drifted_importance=0.05,
        **HOLDS,
    )
    assert not d.retrain and d.triggers == []
    assert d.reasons[0].startswith("drift, no retrain: estimated performance holds")
    assert "x4, x5" in d.reasons[0] and "carry 5% of its importance" in d.reasons[0]


def test_drift_retrains_when_the_estimate_drops_or_the_important_features_moved():
    policy = RetrainPolicy(drift_importance_share=0.6)
    dropped = decide_retrain(
        policy=policy,
        baseline_metric=0.92,
        estimated_metric=0.86,
        drifted_importance=0.05,
        **HOLDS,
    )
    assert dropped.retrain and dropped.triggers == ["drift", "estimated_performance"]
    moved = decide_retrain(
        policy=policy,
        baseline_metric=0.92,
        estimated_metric=0.91,
        drifted_importance=0.6,
        **HOLDS,
    )
    assert moved.retrain and moved.triggers == ["drift"]
    # By default importance alone never retrains; with a share set, unknown importance does.
    assert not decide_retrain(
        policy=RetrainPolicy(),
        baseline_metric=0.92,
        estimated_metric=0.91,
        drifted_importance=0.9,
        **HOLDS,
    ).retrain
    # Without an estimate (or, with a share set, an importance) drift retrains.
    for unknown in (
        {"estimated_metric": None, "drifted_importance": 0.0},
        {"estimated_metric": 0.91, "drifted_importance": None},
    ):
        d = decide_retrain(policy=policy, baseline_metric=0.92, **{**HOLDS, **unknown})
        assert d.retrain and d.triggers == ["drift"]
    # A share of 0 is the old rule: any drift retrains.
    assert decide_retrain(
        policy=RetrainPolicy(drift_importance_share=0.0),
        baseline_metric=0.92,
        estimated_metric=0.91,
        drifted_importance=0.0,
        **HOLDS,
    ).retrain


def test_the_rank_auc_is_scikit_learns():
    from sklearn.metrics import roc_auc_score

    from mlops_loop.core.performance import metric_value

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 200))
        y = rng.integers(0, 2, n)
        scores = np.round(rng.random(n), int(rng.integers(1, 3)))  # many ties
        if len(set(y)) < 2:
            assert np.isnan(metric_value("roc_auc", y, scores))
            continue
        assert metric_value("roc_auc", y, scores) == pytest.approx(roc_auc_score(y, scores))


def test_labels_that_show_no_drop_overrule_an_estimated_one():
    d = decide_retrain(
        policy=RetrainPolicy(),
        dataset_drift=False,
        metric=0.91,
        labelled_rows=500,
        baseline_metric=0.92,
        estimated_metric=0.80,
    )
    assert not d.retrain and d.triggers == []
    assert "but the labels show roc_auc 0.9100: no drop" in d.reasons[0]


def test_drift_whose_labels_show_no_drop_trains_nothing_whatever_the_estimate():
    d = decide_retrain(
        policy=RetrainPolicy(drift_importance_share=0.5),
        dataset_drift=True,
        drifted_features=["x0"],
        metric=0.92,
        labelled_rows=500,
        baseline_metric=0.92,
        estimated_metric=0.83,
        drifted_importance=0.6,
    )
    assert not d.retrain and d.triggers == []
    assert d.reasons[0].startswith("drift, no retrain: realized performance holds")
