"""Trace readers: small hand-written Google, SWF and FlowBench files, read into exact history rows.

One test reads the real shared traces where they exist (``/work/shared/data`` or ``../shared/data``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from predcheck_dagster.errors import PredcheckError, TraceFormatError
from predcheck_dagster.traces import (
    BASE_COLUMNS,
    FORMATS,
    ReadReport,
    read_flowbench,
    read_google2011,
    read_swf,
    read_trace,
)

REPO = Path(__file__).resolve().parents[2]

# --- Google 2011 job_events ----------------------------------------------------------------------

SUBMIT, SCHEDULE, EVICT, FAIL, FINISH, KILL, LOST, UPDATE_RUNNING = 0, 1, 2, 3, 4, 5, 6, 8


def event(t_s: float, job: int, kind: int, user: str = "alice", logical: str = "etl", sched: int = 1,
          missing: str = "") -> str:
    return f"{round(t_s * 1e6)},{missing},{job},{kind},{user},{sched},name{job},{logical}"


PART_0 = [
    event(0, 1, SUBMIT), event(0, 1, SCHEDULE),                            # submitted before the trace
    event(1.0, 2, SUBMIT, sched=2), event(2.0, 2, SCHEDULE), event(3.0, 2, EVICT),
    event(3.5, 2, SUBMIT), event(4.0, 2, SCHEDULE), event(5.0, 2, FAIL),  # failed, then resubmitted...
    event(1.5, 3, SUBMIT, missing="1"), event(2.5, 3, KILL),               # killed while pending
    event(2.0, 4, SUBMIT, user="bob", logical="train"), event(2.1, 4, SCHEDULE),  # never ends: censored
    event(3.0, 7, SUBMIT, user="bob"), event(3.2, 7, SCHEDULE), event(4.0, 7, FINISH),
]
PART_1 = [
    event(6.0, 2, SUBMIT), event(6.5, 2, SCHEDULE), event(7.5, 2, UPDATE_RUNNING),
    event(9.0, 2, FINISH),                                                  # ... and finished: success
    event(20.0, 1, FINISH),
    event(30.0, 5, SCHEDULE), event(31.0, 5, FINISH),                       # no SUBMIT in the data
    event(7.0, 6, SUBMIT, user="bob", logical="train", sched=3), event(7.0, 6, SCHEDULE), event(8.0, 6, LOST),
    event(5.0, 7, SUBMIT, user="bob"),                                      # resubmitted after its end: censored
]


def write_gzip(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture
def google_dir(tmp_path) -> Path:
    folder = tmp_path / "job_events"
    folder.mkdir()
    write_gzip(folder / "part-00000-of-00500.csv.gz", PART_0)
    (folder / "part-00001-of-00500.csv").write_text("\n".join(PART_1) + "\n")  # plain CSV parts are read too
    (folder / "README.txt").write_text("not a part")
    return folder


def test_google_jobs_become_exact_history_rows(google_dir):
    frame, report = read_google2011([google_dir], progress=False)

    assert list(frame["attempt_id"]) == ["3", "2", "6"]  # by started_at
    job3, job2, job6 = (row for _, row in frame.iterrows())
    assert (job2["pipeline"], job2["group"], job2["outcome"]) == ("alice:etl", "alice", "success")
    assert (job2["submitted_at"], job2["started_at"], job2["ended_at"], job2["duration_s"]) == (1.0, 2.0, 9.0, 7.0)
    assert (job2["post_evictions"], job2["post_resubmits"], job2["x_scheduling_class"]) == (1.0, 2.0, 2.0)
    assert (job3["outcome"], job3["submitted_at"], job3["started_at"], job3["ended_at"]) == ("canceled", 1.5, 1.5, 2.5)
    assert job3["x_missing_info"] == 1.0 and job2["x_missing_info"] == 0.0
    assert (job6["pipeline"], job6["outcome"], job6["started_at"], job6["duration_s"]) == ("bob:train", "crashed",
                                                                                        7.0, 1.0)
    assert math.isnan(job6["requested_s"]) and job6["anomaly"] is None
    assert report == ReadReport(files=2, lines=len(PART_0) + len(PART_1), attempts=3, bad_lines_skipped=0,
                                dropped={"submitted_before_trace": 1, "censored": 2, "no_submit": 1})


def test_google_outcome_is_the_last_terminal_event_and_fail_stays_apart_from_kill(tmp_path):
    lines = [event(1, 10, SUBMIT), event(2, 10, SCHEDULE), event(3, 10, FINISH),
             event(1, 11, SUBMIT, user="NA"), event(2, 11, SCHEDULE), event(3, 11, FAIL)]
    frame, _ = read_google2011([write_gzip(tmp_path / "p.csv.gz", lines)], progress=False)
    assert dict(zip(frame["attempt_id"], frame["outcome"])) == {"10": "success", "11": "failure"}
    assert list(frame["pipeline"]) == ["alice:etl", "NA:etl"]  # text is never read as a missing value


def test_google_start_is_the_first_schedule_at_or_after_the_first_submit(tmp_path):
    lines = [event(0.5, 10, SCHEDULE), event(1.0, 10, SUBMIT), event(1.2, 10, SCHEDULE), event(1.4, 10, SCHEDULE),
             event(2.0, 10, FINISH)]  # a stray SCHEDULE before the SUBMIT does not start the job
    frame, _ = read_google2011([write_gzip(tmp_path / "p.csv.gz", lines)], progress=False)
    assert frame[["submitted_at", "started_at", "ended_at"]].values.tolist() == [[1.0, 1.2, 2.0]]


def test_the_frame_has_the_documented_columns_and_types(google_dir):
    frame, _ = read_google2011([google_dir], progress=False)
    assert list(frame.columns) == [*BASE_COLUMNS, "x_missing_info", "x_scheduling_class", "post_evictions",
                                   "post_resubmits", "anomaly"]
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in frame.columns if c.endswith(("_at", "_s"))
               or c.startswith(("x_", "post_")))


@pytest.mark.parametrize(("bad_line", "what"), [
    ("1000000,,9,0,alice,1,n,etl,extra", "expected 8 comma-separated fields, found 9"),
    ("1000000,,9,0,alice,1,n", "expected 8 comma-separated fields, found 7"),
    ("12x,,9,0,alice,1,n,etl", "field 'timestamp' is '12x', not an integer"),
    ("1000000,,9,12,alice,1,n,etl", "field 'event_type' is '12', not an event type 0-8"),
])
def test_a_malformed_google_line_is_named_by_file_and_line(tmp_path, bad_line, what):
    part = write_gzip(tmp_path / "part-00007-of-00500.csv.gz", [*PART_0[:2], bad_line, *PART_0[2:]])
    with pytest.raises(TraceFormatError, match=rf"part-00007-of-00500\.csv\.gz' line 3: {what}; pass "
                                               r"--skip-bad to skip such lines") as caught:
        read_google2011([part], progress=False)
    assert (caught.value.line, caught.value.path) == (3, str(part))


def test_skip_bad_skips_and_counts_malformed_google_lines(tmp_path, google_dir):
    part_0 = google_dir / "part-00000-of-00500.csv.gz"
    write_gzip(part_0, [PART_0[0], "garbage", *PART_0[1:], "1,,9,0,alice,1,n,etl,extra"])
    frame, report = read_google2011([google_dir], skip_bad=True, progress=False)
    assert list(frame["attempt_id"]) == ["3", "2", "6"]
    assert (report.bad_lines_skipped, report.lines) == (2, len(PART_0) + len(PART_1) + 2)


def test_blank_lines_and_empty_parts_are_ignored(tmp_path):
    write_gzip(tmp_path / "p0.csv.gz", ["", event(1, 10, SUBMIT), "", event(3, 10, FINISH)])
    write_gzip(tmp_path / "p1.csv.gz", [])
    (tmp_path / "p2.csv").write_bytes(b"")
    frame, report = read_google2011([tmp_path], progress=False)
    assert (list(frame["attempt_id"]), report.files, report.lines) == (["10"], 3, 2)


@pytest.mark.parametrize("damage", [lambda b: b[:-12], lambda b: b[:10] + b"\x00" * 20 + b[30:]])
def test_a_corrupt_gzip_part_is_named(tmp_path, damage):
    part = tmp_path / "part-00003-of-00500.csv.gz"
    part.write_bytes(damage(gzip.compress(("\n".join(PART_0) + "\n").encode() * 50)))
    with pytest.raises(TraceFormatError, match=r"part-00003-of-00500\.csv\.gz' is not a readable gzip file"):
        read_google2011([part], progress=False)


# --- SWF -----------------------------------------------------------------------------------------

SWF_HEADER = "; Version: 2.2\n; Computer: test machine\n;\n"
SWF_JOBS = [
    # job submit wait run alloc cpu mem req_procs req_time req_mem status user group exe queue part prec think
    "1  0   10  100 4 -1  -1   4 200 -1 1 7 7 3  1 -1 -1 -1",   # completed
    "2  5   -1  50  2 1.5 1024 2 60  -1 0 7 7 -1 -1 -1 -1 -1",  # failed; unknown wait and executable
    "3  6   0   -1  1 -1  -1   1 60  -1 5 8 8 -1 -1 -1 -1 -1",  # cancelled before it ran: no run time
    "4  7   3   20  1 -1  -1   1 -1  -1 5 8 8 2  -1 -1 -1 -1",  # cancelled while running
    "5  8   2   30  1 -1  -1   1 90  -1 2 8 8 2  -1 -1 -1 -1",  # partial execution, continued ...
    "5  8   100 40  1 -1  -1   1 90  -1 3 8 8 2  -1 -1 -1 -1",  # ... last partial execution: completed
    "6  9   0   10  1 -1  -1   1 90  -1 4 8 8 2  -1 -1 -1 -1",  # last partial execution: failed
    "7  10  0   10  1 -1  -1   1 90  -1 -1 8 8 2 -1 -1 -1 -1",  # unknown status
]


def write_swf(path: Path, jobs: list[str], compress: bool = False) -> Path:
    text = SWF_HEADER + "\n".join(jobs) + "\n\n; trailing comment\n"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def test_swf_jobs_become_exact_history_rows(tmp_path):
    frame, report = read_swf([write_swf(tmp_path / "site.swf.gz", SWF_JOBS, compress=True)], progress=False)

    rows = frame.set_index("attempt_id")
    assert list(frame["attempt_id"]) == ["site/2", "site/6", "site/1", "site/4", "site/5/1", "site/5/2"]  # ties by id
    assert rows["outcome"].to_dict() == {"site/2": "failure", "site/4": "canceled", "site/6": "failure",
                                         "site/1": "success", "site/5/1": "crashed", "site/5/2": "success"}
    assert rows.loc["site/1", ["submitted_at", "started_at", "ended_at", "duration_s", "requested_s"]].tolist() == [
        0.0, 10.0, 110.0, 100.0, 200.0]
    assert rows.loc["site/2", ["started_at", "ended_at"]].tolist() == [5.0, 55.0]  # wait -1 counts as none
    assert rows["pipeline"].to_dict() == {"site/2": "7", "site/4": "8:2", "site/6": "8:2", "site/1": "7:3",
                                          "site/5/1": "8:2", "site/5/2": "8:2"}
    assert rows.loc["site/1", "group"] == "7"
    assert rows.loc["site/2", ["post_avg_cpu", "post_used_mem"]].tolist() == [1.5, 1024.0]
    assert math.isnan(rows.loc["site/1", "post_avg_cpu"]) and math.isnan(rows.loc["site/4", "requested_s"])
    assert rows.loc["site/1", ["x_req_procs", "x_req_time", "x_queue", "x_alloc_procs"]].tolist() == [
        4.0, 200.0, 1.0, 4.0]
    assert math.isnan(rows.loc["site/1", "x_req_mem"]) and math.isnan(rows.loc["site/1", "x_partition"])
    assert report.dropped == {"run_time_unknown": 1, "status_unknown": 1}
    assert report.mapped == {
        "swf status 2 (partial execution, continued later) -> crashed": 1,
        "swf status 3 (last partial execution, job completed) -> success": 1,
        "swf status 4 (last partial execution, job failed) -> failure": 1,
    }
    assert (report.files, report.lines, report.attempts) == (1, 8, 6)


@pytest.mark.parametrize(("bad_line", "what"), [
    ("8 11 0 10 1 -1 -1 1 90 -1 1 8 8 2 -1 -1 -1", "expected 18 whitespace-separated fields, found 17"),
    ("8 11 0 10 1 -1 -1 1 90 -1 1 8 8 2 -1 -1 -1 -1 -1", "expected 18 whitespace-separated fields, found 19"),
    ("8 11 0 ten 1 -1 -1 1 90 -1 1 8 8 2 -1 -1 -1 -1", "field 'run' is 'ten', not a number"),
])
@pytest.mark.parametrize("first", [True, False])
def test_a_malformed_swf_line_is_named_by_file_and_line(tmp_path, bad_line, what, first):
    jobs = [bad_line, *SWF_JOBS] if first else [*SWF_JOBS, bad_line]
    line = 4 if first else 4 + len(SWF_JOBS)  # after the 3 header lines
    log = write_swf(tmp_path / "site.swf", jobs)
    with pytest.raises(TraceFormatError, match=rf"site\.swf' line {line}: {what}; pass --skip-bad"):
        read_swf([log], progress=False)
    frame, report = read_swf([log], skip_bad=True, progress=False)
    assert (len(frame), report.bad_lines_skipped, report.lines) == (6, 1, 9)


def test_a_header_only_log_has_no_jobs(tmp_path):
    frame, report = read_swf([write_swf(tmp_path / "empty.swf", [])], progress=False)
    assert (len(frame), list(frame.columns)[:len(BASE_COLUMNS)], report.lines) == (0, list(BASE_COLUMNS), 0)


def test_a_log_whose_every_line_is_too_long_is_rejected(tmp_path):
    log = write_swf(tmp_path / "wide.swf", [line + " 0" for line in SWF_JOBS])  # 19 fields, no shorter line
    with pytest.raises(TraceFormatError, match=r"wide\.swf' line 4: expected 18 whitespace-separated fields, found 19 "
                                               r"\(and 7 more bad lines\)"):
        read_swf([log], progress=False)


# --- FlowBench -----------------------------------------------------------------------------------

FLOWBENCH_HEADER = (
    ",anomaly_type,type,is_clustered,ready,pre_script_start,pre_script_end,submit,stage_in_start,stage_in_end,"
    "stage_in_effective_bytes_per_sec,execute_start,execute_end,stage_out_start,stage_out_end,"
    "stage_out_effective_bytes_per_sec,post_script_start,post_script_end,wms_delay,pre_script_delay,queue_delay,"
    "runtime,post_script_delay,stage_in_delay,stage_in_bytes,stage_out_delay,stage_out_bytes,kickstart_user,"
    "kickstart_site,kickstart_hostname,kickstart_transformations,kickstart_executables,kickstart_executables_argv,"
    "kickstart_executables_cpu_time,kickstart_status,kickstart_executables_exitcode,kickstart_online_iowait,"
    "kickstart_online_bytes_read,kickstart_online_bytes_written,kickstart_online_read_system_calls,"
    "kickstart_online_write_system_calls,kickstart_online_utime,kickstart_online_stime,"
    "kickstart_online_bytes_read_per_second,kickstart_online_bytes_written_per_second"
).split(",")


def step(name: str, **values) -> list[str]:
    row = {"anomaly_type": "None", "type": "compute", "is_clustered": "0", "kickstart_status": "0",
           "kickstart_executables_exitcode": "0", **{k: str(v) for k, v in values.items()}}
    return [name, *(row.get(column, "") for column in FLOWBENCH_HEADER[1:])]


RUN_1 = [
    step("create_dir_wf_0_condorpool", type="auxiliary", ready=99.0, submit=100.0, execute_start=104.0,
         execute_end=110.0, kickstart_transformations="pegasus::dirmanager", kickstart_executables_cpu_time=0.3),
    step("difmapp_ID0000001", anomaly_type="cpu_2", ready=109.0, submit=110.0, execute_start=112.0,
         execute_end=150.0, stage_in_bytes=5e6, kickstart_transformations="difmapp",
         kickstart_executables_argv="-a 1,2", kickstart_executables_cpu_time=3.5, kickstart_online_bytes_read=1000,
         kickstart_online_bytes_written=2000, kickstart_online_utime=1.0, kickstart_online_stime=0.5),
    step("postproc_ID0000002", ready=111.0, execute_start=120.0, execute_end=121.0,
         kickstart_executables_exitcode=1),  # no transformation, no submit time; exit code 1: failed
]
RUN_2 = [
    step("difmapp_ID0000001", ready=200.0, submit=201.0, kickstart_transformations="difmapp"),  # never executed
    step("difmapp_ID0000003", anomaly_type="hdd_5", ready=200.0, submit=201.0, execute_start=203.0,
         execute_end=260.0, kickstart_transformations="difmapp", kickstart_status=1),
]


def csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([FLOWBENCH_HEADER, *rows])
    return out.getvalue()


def write_zip(path: Path, runs: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in runs.items():
            archive.writestr(name, text)
    return path


@pytest.fixture
def flowbench_dir(tmp_path) -> Path:
    folder = tmp_path / "flowbench"
    folder.mkdir()
    write_zip(folder / "wf_a.zip", {"wf-a-run0002.csv": csv_text(RUN_2), "wf-a-run0001.csv": csv_text(RUN_1)})
    (folder / "LICENSE").write_text("MIT")
    return folder


def test_flowbench_steps_become_exact_history_rows(flowbench_dir):
    frame, report = read_trace("flowbench", [flowbench_dir], progress=False)

    rows = frame.set_index("attempt_id")
    assert list(frame["attempt_id"]) == ["wf_a/wf-a-run0001.csv/create_dir_wf_0_condorpool",
                                         "wf_a/wf-a-run0001.csv/difmapp_ID0000001",
                                         "wf_a/wf-a-run0001.csv/postproc_ID0000002",
                                         "wf_a/wf-a-run0002.csv/difmapp_ID0000003"]
    assert list(frame["pipeline"]) == ["wf_a:pegasus::dirmanager", "wf_a:difmapp", "wf_a:postproc", "wf_a:difmapp"]
    assert list(frame["outcome"]) == ["success", "success", "failure", "failure"]
    assert list(frame["anomaly"]) == [None, "cpu_2", None, "hdd_5"]
    assert set(frame["group"]) == {"wf_a"}
    difmapp = rows.loc["wf_a/wf-a-run0001.csv/difmapp_ID0000001"]
    assert difmapp[["submitted_at", "started_at", "ended_at", "duration_s", "x_stage_in_bytes", "post_cpu_s",
                    "post_read_bytes", "post_written_bytes", "post_utime", "post_stime"]].tolist() == [
        110.0, 112.0, 150.0, 38.0, 5e6, 3.5, 1000.0, 2000.0, 1.0, 0.5]
    assert rows.loc["wf_a/wf-a-run0001.csv/postproc_ID0000002", "submitted_at"] == 111.0  # ready, without submit
    assert report == ReadReport(files=1, lines=5, attempts=4, bad_lines_skipped=0, dropped={"no_execute_time": 1})


def test_a_malformed_flowbench_row_is_named_by_zip_member_and_line(tmp_path):
    bad = step("difmapp_ID0000009", submit=1.0, execute_start="soon", execute_end=3.0)
    short = step("difmapp_ID0000010", submit=1.0, execute_start=2.0, execute_end=3.0)[:-2]
    archive = write_zip(tmp_path / "wf_b.zip", {"run1.csv": csv_text([*RUN_1, bad, short])})
    with pytest.raises(TraceFormatError, match=r"wf_b\.zip' member 'run1\.csv' line 5: field 'execute_start' is "
                                               r"'soon', not a number; pass --skip-bad"):
        read_flowbench([archive], progress=False)
    frame, report = read_flowbench([archive], skip_bad=True, progress=False)
    assert (len(frame), report.bad_lines_skipped, report.lines) == (3, 2, 5)


def test_a_corrupt_zip_is_named(tmp_path):
    archive = tmp_path / "wf_c.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(TraceFormatError, match=r"wf_c\.zip' is not a readable zip file"):
        read_flowbench([archive], progress=False)


# --- paths, formats, progress --------------------------------------------------------------------


def test_a_missing_path_or_an_empty_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"trace path '.*nowhere\.swf' does not exist"):
        read_swf([tmp_path / "nowhere.swf"], progress=False)
    with pytest.raises(FileNotFoundError, match=r"holds no \*\.zip file"):
        read_flowbench([tmp_path], progress=False)


def test_an_unknown_format_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown trace format 'sge': choose one of google2011, swf, flowbench"):
        read_trace("sge", [tmp_path])
    assert FORMATS == ("google2011", "swf", "flowbench")


def test_trace_format_error_is_a_predcheck_value_error():
    assert issubclass(TraceFormatError, PredcheckError) and issubclass(TraceFormatError, ValueError)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_only(tmp_path, monkeypatch):
    log = write_swf(tmp_path / "site.swf", SWF_JOBS)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    read_swf([log], progress=False)
    assert terminal.getvalue() == ""
    read_swf([log])
    assert "reading swf" in terminal.getvalue() and "files=1/1" in terminal.getvalue()
    pipe = io.StringIO()  # not a terminal: silent, like tqdm's disable=None
    monkeypatch.setattr(sys, "stderr", pipe)
    read_swf([log])
    assert pipe.getvalue() == ""


def test_traces_imports_no_dagster():
    bare = ("import sys, types; pkg = types.ModuleType('predcheck_dagster'); "
            f"pkg.__path__ = [{str(REPO / 'predcheck_dagster')!r}]; sys.modules['predcheck_dagster'] = pkg")
    code = f"{bare}\nimport json, predcheck_dagster.traces\nprint(json.dumps('dagster' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False


# --- the real shared traces ----------------------------------------------------------------------
