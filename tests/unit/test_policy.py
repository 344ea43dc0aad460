"""Checkpoint policy math (DESIGN.md §8): Young, Daly, exact waste, Aupy et al., adaptive interval."""

from __future__ import annotations

import math

import pytest

from predcheck_dagster import policy

MINUTE, HOUR = 60.0, 3600.0


# ---- Young and Daly ---------------------------------------------------------------------------
def test_young_period_is_sqrt_2_c_mu():
    assert policy.young_period(cost_s=300.0, mtbf_s=86_400.0) == pytest.approx(7200.0)
    assert policy.young_period(cost_s=2.0, mtbf_s=100.0) == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("mtbf_s", "expected_min", "tolerance_min"),
    [(24 * HOUR, 117.0, 1.0), (6 * HOUR, 57.0, 1.0), (15 * MINUTE, 9.1, 0.5)],
)
def test_daly_period_matches_dalys_worked_examples(mtbf_s, expected_min, tolerance_min):
    tau = policy.daly_period(cost_s=5 * MINUTE, mtbf_s=mtbf_s)
    assert tau / MINUTE == pytest.approx(expected_min, abs=tolerance_min)


def test_daly_period_is_close_to_young_when_cost_is_small():
    young = policy.young_period(1.0, 1e6)
    daly = policy.daly_period(1.0, 1e6)
    assert daly == pytest.approx(young, rel=0.01)
    assert daly != young


def test_daly_period_is_mtbf_when_cost_reaches_twice_the_mtbf():
    assert policy.daly_period(cost_s=200.0, mtbf_s=100.0) == 100.0
    assert policy.daly_period(cost_s=500.0, mtbf_s=100.0) == 100.0


# ---- exact waste ------------------------------------------------------------------------------
def test_exact_waste_stays_within_zero_and_one():
    for period in (0.5, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5):
        waste = policy.exact_waste(period, cost_s=10.0, mtbf_s=1e4, downtime_s=5.0, restart_s=5.0)
        assert 0.0 <= waste <= 1.0
    # a period shorter than the checkpoint does no useful work at all
    assert policy.exact_waste(5.0, cost_s=10.0, mtbf_s=1e4) == 1.0
    # a period far beyond the MTBF wastes almost everything
    assert policy.exact_waste(1e6, cost_s=10.0, mtbf_s=1e4) > 0.99


def test_exact_waste_is_minimal_near_youngs_period():
    cost_s, mtbf_s = 10.0, 36_000.0
    periods = [cost_s + i * 5.0 for i in range(1, 4000)]
    best = min(periods, key=lambda t: policy.exact_waste(t, cost_s, mtbf_s))
    young = policy.young_period(cost_s, mtbf_s)
    assert best == pytest.approx(young, rel=0.05)
    assert policy.exact_waste(young, cost_s, mtbf_s) < policy.exact_waste(young / 4, cost_s, mtbf_s)
    assert policy.exact_waste(young, cost_s, mtbf_s) < policy.exact_waste(young * 4, cost_s, mtbf_s)


def test_exact_waste_grows_with_downtime_and_restart():
    base = policy.exact_waste(850.0, 10.0, 36_000.0)
    slower = policy.exact_waste(850.0, 10.0, 36_000.0, downtime_s=600.0, restart_s=600.0)
    assert slower > base


# ---- with prediction (Aupy, Robert, Vivien, Zaidouni 2014) -----------------------------------
def test_aupy_period_without_recall_is_youngs():
    assert policy.aupy_period(10.0, 36_000.0, recall=0.0, proactive_cost_s=10.0, precision=0.5) == \
        pytest.approx(policy.young_period(10.0, 36_000.0))


def test_aupy_period_lengthens_with_recall():
    periods = [policy.aupy_period(10.0, 36_000.0, recall=r, proactive_cost_s=10.0, precision=0.8)
               for r in (0.0, 0.3, 0.6, 0.9)]
    assert periods == sorted(periods)
    assert periods[-1] > 2 * periods[0]


def test_aupy_period_with_perfect_recall_is_the_mtbf():
    assert policy.aupy_period(10.0, 36_000.0, recall=1.0, proactive_cost_s=10.0, precision=0.5) == 36_000.0


def test_aupy_period_falls_back_to_young_when_radicand_is_not_positive():
    # r (C_p/p)^2 = 0.5 * 1e6 > 2 mu C = 2000
    assert policy.aupy_period(10.0, 100.0, recall=0.5, proactive_cost_s=100.0, precision=0.1) == \
        pytest.approx(policy.young_period(10.0, 100.0))


def test_aupy_waste_without_recall_is_first_order_young_waste():
    cost_s, mtbf_s = 10.0, 36_000.0
    t = policy.young_period(cost_s, mtbf_s)
    waste = policy.aupy_waste(t, cost_s, mtbf_s, recall=0.0, proactive_cost_s=10.0, precision=1.0)
    assert waste == pytest.approx(cost_s / t + t / (2 * mtbf_s))
    assert waste == pytest.approx(math.sqrt(2 * cost_s / mtbf_s))


def test_aupy_waste_is_lower_with_recall_at_the_optimal_periods():
    cost_s, mtbf_s, cp, p = 10.0, 36_000.0, 10.0, 0.8
    without = policy.aupy_waste(policy.aupy_period(cost_s, mtbf_s, 0.0, cp, p), cost_s, mtbf_s, 0.0, cp, p,
                                downtime_s=60.0, restart_s=60.0)
    previous = without
    for recall in (0.3, 0.6, 0.9):
        t = policy.aupy_period(cost_s, mtbf_s, recall, cp, p)
        waste = policy.aupy_waste(t, cost_s, mtbf_s, recall, cp, p, downtime_s=60.0, restart_s=60.0)
        assert waste < previous
        previous = waste
    # never below the floor of a perfect predictor: (D + R + C_p) / mu
    assert previous > (60.0 + 60.0 + cp) / mtbf_s


# ---- hazard from a forecast --------------------------------------------------------------------
def test_mtbf_from_probability_inverts_constant_hazard():
    mtbf = policy.mtbf_from_probability(0.5, horizon_s=100.0)
    assert mtbf == pytest.approx(100.0 / math.log(2))
    assert 1 - math.exp(-100.0 / mtbf) == pytest.approx(0.5)


def test_mtbf_from_probability_clamps_certain_and_impossible_failures():
    assert math.isfinite(policy.mtbf_from_probability(1.0, 100.0))
    assert math.isfinite(policy.mtbf_from_probability(0.0, 100.0))
    assert policy.mtbf_from_probability(1.0, 100.0) < 10.0
    assert policy.mtbf_from_probability(0.0, 100.0) > 1e7
    assert policy.mtbf_from_probability(1.5, 100.0) == policy.mtbf_from_probability(1.0, 100.0)
    assert policy.mtbf_from_probability(-0.5, 100.0) == policy.mtbf_from_probability(0.0, 100.0)


# ---- adaptive interval -------------------------------------------------------------------------
def test_adaptive_interval_is_long_for_low_risk_and_short_for_high_risk():
    low = policy.adaptive_interval(1.0, 0.01, 600.0, min_interval_s=1.0, max_interval_s=1e6)
    high = policy.adaptive_interval(1.0, 0.9, 600.0, min_interval_s=1.0, max_interval_s=1e6)
    assert low > 5 * high
    assert low == pytest.approx(policy.daly_period(1.0, policy.mtbf_from_probability(0.01, 600.0)))
    assert high == pytest.approx(policy.daly_period(1.0, policy.mtbf_from_probability(0.9, 600.0)))


def test_adaptive_interval_is_clamped():
    assert policy.adaptive_interval(1.0, 0.001, 600.0, min_interval_s=1.0, max_interval_s=120.0) == 120.0
    assert policy.adaptive_interval(1.0, 0.999999, 1.0, min_interval_s=30.0, max_interval_s=120.0) == 30.0


def test_adaptive_interval_without_forecast_uses_the_default_mtbf():
    expected = policy.daly_period(2.0, 10_000.0)
    for probability, horizon in ((None, 600.0), (0.5, None), (0.5, 0.0), (0.5, -5.0)):
        got = policy.adaptive_interval(2.0, probability, horizon, 0.0, 1e9, default_mtbf_s=10_000.0)
        assert got == pytest.approx(expected)


def test_adaptive_interval_accepts_zero_cost():
    assert policy.adaptive_interval(0.0, 0.5, 60.0, min_interval_s=0.0, max_interval_s=1e6) > 0


# ---- proactive checkpoint decision -------------------------------------------------------------
def test_should_request_checkpoint_when_expected_work_saved_exceeds_cost():
    assert policy.should_request_checkpoint(0.5, work_since_checkpoint_s=10.0, checkpoint_cost_s=4.0)
    assert not policy.should_request_checkpoint(0.5, work_since_checkpoint_s=10.0, checkpoint_cost_s=5.0)
    assert not policy.should_request_checkpoint(0.5, work_since_checkpoint_s=10.0, checkpoint_cost_s=6.0)
    assert not policy.should_request_checkpoint(0.0, work_since_checkpoint_s=1e6, checkpoint_cost_s=0.01)


def test_should_not_request_checkpoint_for_a_step_that_is_done():
    assert policy.should_request_checkpoint(0.9, 100.0, 1.0, predicted_remaining_s=30.0)
    assert policy.should_request_checkpoint(0.9, 100.0, 1.0, predicted_remaining_s=None)
    assert not policy.should_request_checkpoint(0.9, 100.0, 1.0, predicted_remaining_s=0.0)
    assert policy.expected_work_saved(0.9, -10.0) == 0.0


# ---- input validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: policy.young_period(0.0, 100.0), r"^cost_s must be > 0, got 0\.0$"),
        (lambda: policy.young_period(1.0, -3.0), r"^mtbf_s must be > 0, got -3\.0$"),
        (lambda: policy.daly_period(-1.0, 100.0), r"^cost_s must be > 0, got -1\.0$"),
        (lambda: policy.exact_waste(0.0, 1.0, 100.0), r"^period_s must be > 0, got 0\.0$"),
        (lambda: policy.exact_waste(10.0, 1.0, 0.0), r"^mtbf_s must be > 0, got 0\.0$"),
        (lambda: policy.aupy_period(1.0, 100.0, 0.5, 1.0, precision=0.0), r"^precision must be > 0, got 0\.0$"),
        (lambda: policy.aupy_waste(0.0, 1.0, 100.0, 0.5, 1.0, 0.5), r"^period_s must be > 0, got 0\.0$"),
        (lambda: policy.mtbf_from_probability(0.5, horizon_s=0.0), r"^horizon_s must be > 0, got 0\.0$"),
        (lambda: policy.young_period(float("nan"), 100.0), r"^cost_s must be > 0, got nan$"),
    ],
)
def test_non_positive_inputs_are_refused_with_the_parameter_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
