"""``predcheck trace-eval`` end to end on a generated SWF log: reads, trains both families before the
split, scores after it next to the baselines, writes JSON and plots; bad input gets a clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from predcheck_dagster.cli import main
from predcheck_dagster.trace_eval import Split


def write_swf(path: Path, n: int = 1500, seed: int = 0, bad_line: int | None = None) -> Path:
    """Users with habits: some keep hitting their requested time, some keep failing."""
    rng = random.Random(seed)
    lines = ["; Version: 2.2", "; Computer: test", ";"]
    t = 0
    for job in range(1, n + 1):
        user = rng.randint(1, 12)
        requested = rng.choice([600, 3600, 7200])
        overruns = user <= 3 and rng.random() < 0.8
        run = requested if overruns else int(requested * rng.uniform(0.05, 0.6))
        status = 0 if (user in (4, 5) and rng.random() < 0.7) or rng.random() < 0.05 else 1
        t += rng.randint(30, 300)
        fields = [job, t, rng.randint(0, 60), run, 4, -1, -1, 4, requested, -1, status, user, user, user % 4 + 1,
                  1, 1, -1, -1]
        lines.append(" ".join(str(f) for f in fields))
        if bad_line is not None and len(lines) == bad_line:
            lines.append("17 oops")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("label", ["overrun", "fail"])
def test_trace_eval_writes_the_table_json_and_plots(tmp_path, label):
    log = write_swf(tmp_path / "test.swf")
    output = tmp_path / "out" / f"{label}.json"
    result = CliRunner().invoke(main, ["trace-eval", "--format", "swf", "--input", str(log), "--split-at", "0.75",
                                       "--label", label, "--output", str(output), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "first failure after a success" in result.output
    payload = json.loads(output.read_text())
    expected = {"last_outcome", "smoothed_rate", "xgboost", "lstm"} | ({"tsafrir"} if label == "overrun" else set())
    assert set(payload["results"]) == expected
    assert payload["n_train"] > 0 and payload["n_test"] > 0
    assert payload["read_report"]["attempts"] == 1500
    for name, r in payload["results"].items():
        assert {"auroc", "auprc", "brier", "ece"} <= set(r["overall"]), name
        assert "first_failure_after_success" in r
    # the habits are learnable: both models beat the base rate by far
    for family in ("xgboost", "lstm"):
        assert payload["results"][family]["overall"]["auroc"] > 0.8, family
    for suffix in ("_pr.png", "_calibration.png"):
        assert (tmp_path / "out" / f"{label}{suffix}").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_line_is_named_and_skip_bad_counts_it(tmp_path):
    log = write_swf(tmp_path / "bad.swf", n=400, bad_line=50)
    args = ["trace-eval", "--format", "swf", "--input", str(log), "--split-at", "0.7", "--output",
            str(tmp_path / "r.json"), "--no-progress", "--model", "xgboost"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "bad.swf' line 51" in result.output and "--skip-bad" in result.output
    result = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["read_report"]["bad_lines_skipped"] == 1


def test_split_at_is_parsed_or_refused_with_the_accepted_forms(tmp_path):
    assert Split.parse("0.75").fraction == 0.75
    assert Split.parse("17d").at == 17 * 86400
    assert Split.parse("36h").at == 36 * 3600
    assert Split.parse("1468800").at == 1468800.0
    result = CliRunner().invoke(main, ["trace-eval", "--format", "swf", "--input", str(write_swf(tmp_path / "a.swf")),
                                       "--split-at", "yesterday", "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 1
    assert "--split-at 'yesterday' is neither a fraction (0.75) nor a trace time" in result.output
    result = CliRunner().invoke(main, ["trace-eval", "--format", "swf", "--input", str(write_swf(tmp_path / "b.swf")),
                                       "--split-at", "999999d", "--output", str(tmp_path / "r.json"), "--no-progress"])
    assert result.exit_code == 1 and "leaves" in result.output and "move it" in result.output
