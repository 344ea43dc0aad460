"""The ``predcheck status`` table: one aligned line per step, risk from the threshold, and a hint
when the forecast sensor has not scored a step yet."""

from predcheck_dagster.status import StepStatus, render_table


def test_table_aligns_columns_and_counts_high_risk() -> None:
    rows = [
        StepStatus(run_id="932afd3a-0000", job="preemptible_job", step_key="preemptible_crunch", elapsed_s=12.4,
                   failure_probability=0.571, predicted_remaining_s=None, served_by="heuristic", scored_ago_s=2.2,
                   last_checkpoint_ago_s=0.6, checkpoint_pending=True),
        StepStatus(run_id="5f8e4d5d-1111", job="memory_job", step_key="memory_hungry_transform", elapsed_s=3.0,
                   failure_probability=0.2, predicted_remaining_s=41.0, served_by="model", model_version="3",
                   scored_ago_s=1.0),
    ]
    assert render_table(rows, 0.5).splitlines() == [
        "RUN       JOB              STEP                     ELAPSED  P_FAIL  RISK  REMAINING  LAST CKPT"
        "           SCORED",
        "932afd3a  preemptible_job  preemptible_crunch       12s      0.57    high  -          1s ago (requested)"
        "  2s ago (heuristic)",
        "5f8e4d5d  memory_job       memory_hungry_transform  3s       0.20    low   41s        -"
        "                   1s ago (model v3)",
        "2 step(s) in flight, 1 at high risk (p_fail >= 0.5)",
    ]
    assert "1 at high risk" not in render_table(rows, 0.6)


def test_unscored_step_says_what_to_check() -> None:
    row = StepStatus(run_id="r" * 36, job="j", step_key="s", elapsed_s=1.0)
    assert row.risk(0.5) == "not scored" and row.to_dict(0.5)["risk"] == "not scored"
    assert render_table([row], 0.5).splitlines()[-1].startswith(
        "not scored: the forecast sensor has not scored the step yet; is predcheck_forecast_sensor running")
