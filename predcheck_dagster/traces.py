"""Readers of real execution traces into one history frame, for ``predcheck trace-eval`` (pure: no dagster).

Three public formats are read: the Google cluster-data 2011 ``job_events`` table, the Standard
Workload Format (SWF) of the Parallel Workloads Archive, and FlowBench's Pegasus workflow runs.
Each becomes a *history frame*, one row per attempt (job, or workflow step), sorted by
``started_at`` then ``attempt_id``:

=================  ===========================================================================
column             meaning
=================  ===========================================================================
``pipeline``       the recurring unit whose history predicts its next run (str)
``group``          a coarser owner, the user or workflow, for group-level history (str)
``attempt_id``     unique id of the attempt (str)
``submitted_at``   seconds, in the trace's own clock (float)
``started_at``     seconds (float)
``ended_at``       seconds (float)
``duration_s``     ``ended_at - started_at``, never negative (float)
``outcome``        one of :data:`OUTCOMES` (str)
``requested_s``    the run time the user asked for, NaN when unknown (float)
``x_*``            attributes known at submit time (float, NaN when unknown)
``post_*``         observations known only after the attempt ended (float, NaN when unknown);
                   a model may use them from *earlier* attempts only
``anomaly``        FlowBench's injected-slowdown label, else ``None`` (object)
=================  ===========================================================================

Bad input: a malformed line raises :class:`TraceFormatError` naming the file and its 1-based line;
with ``skip_bad=True`` such lines are skipped and counted in :attr:`ReadReport.bad_lines_skipped`.
Blank lines are ignored in every format. A missing path raises ``FileNotFoundError``; a corrupt
gzip or zip raises :class:`TraceFormatError`. Attempts that cannot be placed in time or have no
known outcome are dropped, and counted by reason in :attr:`ReadReport.dropped`.

Progress: ``progress=True`` draws one tqdm bar on stderr over the input bytes, with the files and
lines read so far; like tqdm's ``disable=None`` it stays silent when stderr is not a terminal
(CI logs, pipes). ``progress=False`` never draws it.

Guarantees:
    - Every reader returns the same columns in the same order (:data:`BASE_COLUMNS` first, then
      ``x_*``, ``post_*`` and ``anomaly``), with ``attempt_id`` unique and ``duration_s >= 0``.
    - Reading is vectorised (pandas' C parser, numpy, groupby); a slow line-by-line pass runs only
      over a file the fast parser rejected, to name the offending line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from predcheck_dagster.errors import ConfigError, TraceFormatError

FORMATS = ("google2011", "swf", "flowbench")
OUTCOMES = ("success", "failure", "crashed", "canceled")
BASE_COLUMNS = ("pipeline", "group", "attempt_id", "submitted_at", "started_at", "ended_at", "duration_s",
                "outcome", "requested_s")
SKIP_HINT = "pass --skip-bad to skip such lines (they are counted in the read report)"

GOOGLE_PATTERNS = ("*.csv.gz", "*.csv")
GOOGLE_FIELDS = ("timestamp", "missing_info", "job_id", "event_type", "user", "scheduling_class", "job_name",
                 "logical_job_name")
GOOGLE_DTYPES = {"timestamp": "int64", "missing_info": "float64", "job_id": "int64", "event_type": "int64",
                 "user": "str", "scheduling_class": "int64", "logical_job_name": "str"}
GOOGLE_INTEGERS = ("timestamp", "job_id", "event_type", "scheduling_class")
SUBMIT, SCHEDULE, EVICT, FAIL, FINISH, KILL, LOST = 0, 1, 2, 3, 4, 5, 6
GOOGLE_MAX_EVENT = 8  # 7 UPDATE_PENDING, 8 UPDATE_RUNNING
GOOGLE_OUTCOMES = {FAIL: "failure", FINISH: "success", KILL: "canceled", LOST: "crashed"}
MICROSECONDS = 1e6

SWF_PATTERNS = ("*.swf", "*.swf.gz")
SWF_FIELDS = ("job", "submit", "wait", "run", "alloc_procs", "avg_cpu", "used_mem", "req_procs", "req_time",
              "req_mem", "status", "user", "group", "executable", "queue", "partition", "preceding_job",
              "think_time")
SWF_UNKNOWN = -1
# status -> (outcome, note in ReadReport.mapped, or None for the standard statuses 0, 1 and 5)
SWF_STATUSES = {
    1: ("success", None),
    0: ("failure", None),
    5: ("canceled", None),
    2: ("crashed", "swf status 2 (partial execution, continued later) -> crashed"),
    3: ("success", "swf status 3 (last partial execution, job completed) -> success"),
    4: ("failure", "swf status 4 (last partial execution, job failed) -> failure"),
}
SWF_SUBMIT_ATTRIBUTES = ("req_procs", "req_time", "req_mem", "queue", "partition", "alloc_procs")
SWF_OBSERVATIONS = ("avg_cpu", "used_mem")

FLOWBENCH_PATTERNS = ("*.zip",)
FLOWBENCH_REQUIRED = ("submit", "ready", "execute_start", "execute_end", "kickstart_status",
                      "kickstart_executables_exitcode", "anomaly_type", "kickstart_transformations")
# history column -> FlowBench column; NaN where a workflow's CSVs lack the column
FLOWBENCH_MEASURES = {
    "x_stage_in_bytes": "stage_in_bytes",
    "post_cpu_s": "kickstart_executables_cpu_time",
    "post_read_bytes": "kickstart_online_bytes_read",
    "post_written_bytes": "kickstart_online_bytes_written",
    "post_utime": "kickstart_online_utime",
    "post_stime": "kickstart_online_stime",
}
FLOWBENCH_NUMBERS = ("submit", "ready", "execute_start", "execute_end", "kickstart_status",
                     "kickstart_executables_exitcode", *FLOWBENCH_MEASURES.values())
FLOWBENCH_NO_ANOMALY = ("", "None")
STEP_ID_SUFFIX = re.compile(r"_ID\d+$")


@dataclass
class ReadReport:
    """What a read took in and what it left out, for the CLI to print.

    Attributes:
        files: files read (Google parts, SWF logs, FlowBench zips).
        lines: data lines (CSV rows) read, bad ones included; headers, comments and blank lines excluded.
        attempts: rows of the history frame.
        bad_lines_skipped: malformed lines skipped under ``skip_bad``.
        dropped: attempts left out of the frame, by reason (only reasons that occurred).
        mapped: source values outside the format's usual vocabulary, mapped to an outcome (note -> count).
    """

    files: int = 0
    lines: int = 0
    attempts: int = 0
    bad_lines_skipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    mapped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def summary(self) -> str:
        """One line, e.g. ``372 files, 1,504,976 lines -> 497,442 attempts; dropped censored=1,598, ...``."""
        text = f"{self.files} files, {self.lines:,} lines -> {self.attempts:,} attempts"
        if self.bad_lines_skipped:
            text += f"; skipped {self.bad_lines_skipped:,} bad lines"
        if self.dropped:
            text += "; dropped " + ", ".join(f"{reason}={n:,}" for reason, n in sorted(self.dropped.items()))
        if self.mapped:
            text += "; mapped " + ", ".join(f"{note}: {n:,}" for note, n in sorted(self.mapped.items()))
        return text


class _Malformed(ValueError):
    """The fast parser accepted a file that a check after it rejects: find the line the slow way."""


# --- shared plumbing -----------------------------------------------------------------------------


def read_trace(fmt: str, paths: Sequence[str | Path], *, skip_bad: bool = False,
               progress: bool = True) -> tuple[pd.DataFrame, ReadReport]:
    """Read ``paths`` of trace format ``fmt`` (one of :data:`FORMATS`) into a history frame.

    Raises:
        ConfigError: ``fmt`` is not one of :data:`FORMATS` (a ``ValueError``).
    """
    readers: dict[str, Callable[..., tuple[pd.DataFrame, ReadReport]]] = {
        "google2011": read_google2011, "swf": read_swf, "flowbench": read_flowbench,
    }
    if fmt not in readers:
        raise ConfigError(f"unknown trace format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return readers[fmt](paths, skip_bad=skip_bad, progress=progress)


def trace_files(paths: Sequence[str | Path] | str | Path, patterns: Sequence[str]) -> list[Path]:
    """The files ``paths`` name: a file as is, a directory as its files matching ``patterns``, sorted by name.

    Raises:
        FileNotFoundError: a path does not exist, or a directory holds no matching file.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted({f for pattern in patterns for f in path.glob(pattern) if f.is_file()},
                           key=lambda f: f.name)
            if not found:
                raise FileNotFoundError(f"directory {str(path)!r} holds no {' or '.join(patterns)} file; "
                                        "check the path and the --format")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"trace path {str(path)!r} does not exist; check the path")
    if not files:
        raise FileNotFoundError("no trace path given; name at least one file or directory")
    return files


def _decompressed(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when it is gzip (by its magic number, or a ``.gz`` name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b" and path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise TraceFormatError(f"{str(path)!r} is not a readable gzip file ({e}); download it again or leave "
                               "it out of the paths", path=str(path)) from e


def _progress_bar(files: Sequence[Path], fmt: str, progress: bool) -> tqdm:
    return tqdm(total=sum(f.stat().st_size for f in files), desc=f"reading {fmt}", unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)


def _parse_or_find_bad_lines(path: Path, data: bytes, parse: Callable[[bytes], pd.DataFrame],
                             problem: Callable[[str], str | None], skip_bad: bool) -> tuple[pd.DataFrame, int]:
    """``parse(data)`` (the content of ``path``), and how many bad lines were skipped to parse it.

    When ``parse`` rejects ``data``, a line-by-line pass finds the lines at fault: the first is raised,
    or, under ``skip_bad``, all are left out and the rest parsed again. ``problem(line)`` says what is
    wrong with one line, or None; it rejects at least what ``parse`` rejects, so that a rejected file
    always yields a line to name.
    """
    source, where = repr(str(path)), str(path)
    try:
        return parse(data), 0
    except ValueError as e:  # pandas' ParserError, a non-number, an int overflow, a bad UTF-8 byte, _Malformed
        failure = e
    bad: list[tuple[int, str]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        try:
            why = problem(line.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError:
            why = "it is not UTF-8 text"
        if why is not None:
            bad.append((number, why))
    if not bad:
        raise TraceFormatError(f"{source} cannot be parsed ({failure}); check the file and its --format",
                               path=where) from failure
    if not skip_bad:
        number, why = bad[0]
        more = f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise TraceFormatError(f"{source} line {number}: {why}{more}; {SKIP_HINT}", path=where,
                               line=number) from failure
    skip = {number - 1 for number, _ in bad}
    kept = b"\n".join(line for i, line in enumerate(lines) if i not in skip)
    try:
        return parse(kept), len(bad)
    except ValueError as e:
        raise TraceFormatError(f"{source} cannot be parsed even without its {len(bad)} bad lines ({e}); check "
                               "the file and its --format", path=where) from e


def _integer_problem(name: str, text: str) -> str | None:
    try:
        value = int(text)
    except ValueError:
        return f"field {name!r} is {text!r}, not an integer"
    if not -(2**63) <= value < 2**63:
        return f"field {name!r} is {text!r}, out of the 64-bit range"
    return None


def _number_problem(name: str, text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return f"field {name!r} is {text!r}, not a number"
    if not math.isfinite(value):
        return f"field {name!r} is {text!r}, not a finite number"
    return None


def _id_text(values: pd.Series) -> pd.Series:
    """Numeric ids as text: ``12`` rather than ``12.0``."""
    numbers = values.to_numpy(dtype="float64")
    if np.all(numbers == np.floor(numbers)):
        return pd.Series(numbers.astype("int64"), index=values.index).astype("str")
    return values.astype("str")


def _history_frame(columns: dict[str, object], report: ReadReport) -> pd.DataFrame:
    """The history frame of ``columns``: fixed column order and dtypes, sorted, ``report.attempts`` set."""
    frame = pd.DataFrame(columns)
    for name in ("pipeline", "group", "attempt_id", "outcome"):
        frame[name] = frame[name].astype("str")
    numeric = [c for c in frame.columns if c not in ("pipeline", "group", "attempt_id", "outcome", "anomaly")]
    frame[numeric] = frame[numeric].astype("float64")
    if "anomaly" not in frame:
        frame["anomaly"] = None
    frame["anomaly"] = frame["anomaly"].astype(object).where(frame["anomaly"].notna(), None)
    extra = sorted(c for c in frame.columns if c.startswith("x_")) + sorted(
        c for c in frame.columns if c.startswith("post_"))
    frame = frame[[*BASE_COLUMNS, *extra, "anomaly"]]
    frame = frame.sort_values(["started_at", "attempt_id"], kind="stable", ignore_index=True)
    report.attempts = len(frame)
    return frame


def _drop_negative_durations(columns: dict[str, pd.Series], report: ReadReport) -> dict[str, pd.Series]:
    keep = columns["ended_at"] >= columns["started_at"]
    if keep.all():
        return columns
    report.drop("ended_before_start", int((~keep).sum()))
    return {name: (values[keep] if isinstance(values, pd.Series) else values) for name, values in columns.items()}


# --- Google cluster-data 2011 --------------------------------------------------------------------


def read_google2011(paths: Sequence[str | Path], *, skip_bad: bool = False,
                    progress: bool = True) -> tuple[pd.DataFrame, ReadReport]:
    """Read Google cluster-data 2011 ``job_events`` parts (CSV, gzip or not, no header): one row per job.

    Per ``job_id``: ``submitted_at`` is its first SUBMIT; ``started_at`` the first SCHEDULE at or after
    it (the submit time when the job never ran); ``ended_at`` and ``outcome`` its *last* terminal event
    (FAIL -> failure, FINISH -> success, KILL -> canceled, LOST -> crashed). Times are the trace's
    microseconds, in seconds. ``pipeline`` is ``user:logical_job_name``, ``group`` the user and
    ``attempt_id`` the job id. ``x_scheduling_class`` and ``x_missing_info`` (1 when the field is set)
    come from the first SUBMIT event; ``post_evictions`` counts EVICT events and ``post_resubmits`` the
    SUBMITs after the first. ``requested_s`` is NaN.

    Dropped (``ReadReport.dropped``): ``no_submit`` (events but no SUBMIT), ``submitted_before_trace``
    (first SUBMIT at time 0), ``censored`` (no terminal event at or after its last SUBMIT: still
    pending or running where the data ends), ``ended_before_start`` (last terminal event before the
    first SCHEDULE).

    Events of one job may sit in several parts: all parts are parsed (pandas C parser, one part at a
    time), then grouped once.
    """
    files = trace_files(paths, GOOGLE_PATTERNS)
    report = ReadReport(files=len(files))
    timelines, submit_parts = [], []  # only SUBMIT events keep their text fields: a third of the memory
    with _progress_bar(files, "google2011", progress) as bar:
        for number, path in enumerate(files, start=1):
            events, bad = _parse_or_find_bad_lines(path, _decompressed(path), _parse_google_part,
                                                   _google_line_problem, skip_bad)
            timelines.append(events[["job_id", "timestamp", "event_type"]])
            submit_parts.append(events[events["event_type"].to_numpy() == SUBMIT])
            report.lines += len(events) + bad
            report.bad_lines_skipped += bad
            bar.update(path.stat().st_size)
            bar.set_postfix(parts=f"{number}/{len(files)}", lines=f"{report.lines:,}", refresh=False)
    timeline = pd.concat(timelines, ignore_index=True)
    del timelines
    submits = pd.concat(submit_parts, ignore_index=True)
    del submit_parts
    return _history_frame(_google_jobs(timeline, submits, report), report), report


def _parse_google_part(data: bytes) -> pd.DataFrame:
    """The events of one part; ``_Malformed`` (a ValueError) when a non-blank line has not 8 fields."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buffer == ord("\n"))
    if data and not data.endswith(b"\n"):
        ends = np.append(ends, len(data))
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    commas = np.flatnonzero(buffer == ord(","))
    fields = np.diff(np.searchsorted(commas, ends), prepend=0) + 1
    blank = (ends - starts) == 0
    if np.any((fields != len(GOOGLE_FIELDS)) & ~blank):
        raise _Malformed("a line has not 8 comma-separated fields")
    events = pd.read_csv(io.BytesIO(data), header=None, names=GOOGLE_FIELDS, usecols=list(GOOGLE_DTYPES),
                         dtype=GOOGLE_DTYPES, engine="c", index_col=False, quoting=csv.QUOTE_NONE,
                         keep_default_na=False, na_values=[""], encoding="utf-8")
    kinds = events["event_type"].to_numpy()
    if np.any((kinds < 0) | (kinds > GOOGLE_MAX_EVENT)):
        raise _Malformed("an event type is outside 0-8")
    return events


def _google_line_problem(line: str) -> str | None:
    if not line:
        return None
    fields = line.split(",")
    if len(fields) != len(GOOGLE_FIELDS):
        return f"expected {len(GOOGLE_FIELDS)} comma-separated fields, found {len(fields)}"
    values = dict(zip(GOOGLE_FIELDS, fields))
    for name in GOOGLE_INTEGERS:
        if problem := _integer_problem(name, values[name]):
            return problem
    if values["missing_info"] and (problem := _number_problem("missing_info", values["missing_info"])):
        return problem
    if not 0 <= int(values["event_type"]) <= GOOGLE_MAX_EVENT:
        return f"field 'event_type' is {values['event_type']!r}, not an event type 0-{GOOGLE_MAX_EVENT}"
    return None


def _google_jobs(events: pd.DataFrame, submits: pd.DataFrame, report: ReadReport) -> dict[str, object]:
    """One row per job submitted inside the trace and ended inside the data.

    ``events`` holds (job_id, timestamp, event_type) of every event, ``submits`` every column of the
    SUBMIT events, both in file order (the order of events with equal timestamps).
    """
    events = events.sort_values(["job_id", "timestamp"], kind="stable", ignore_index=True)
    kinds = events["event_type"].to_numpy()
    submits = submits.sort_values(["job_id", "timestamp"], kind="stable", ignore_index=True)
    jobs = submits.drop_duplicates("job_id", keep="first").set_index("job_id")
    report.drop("no_submit", events["job_id"].nunique() - len(jobs))
    before_trace = jobs["timestamp"].to_numpy() == 0
    report.drop("submitted_before_trace", int(before_trace.sum()))
    jobs = jobs[~before_trace]
    last_end = events[np.isin(kinds, list(GOOGLE_OUTCOMES))].drop_duplicates("job_id", keep="last")
    last_end = last_end.set_index("job_id").reindex(jobs.index)
    last_submit = submits.groupby("job_id")["timestamp"].max().reindex(jobs.index)
    ended = (last_end["timestamp"] >= last_submit).to_numpy()  # False without a terminal event (NaN)
    report.drop("censored", int((~ended).sum()))
    jobs, last_end = jobs[ended], last_end[ended]

    schedules = events[kinds == SCHEDULE]
    submitted = jobs["timestamp"].reindex(schedules["job_id"]).to_numpy()
    first_run = schedules[schedules["timestamp"].to_numpy() >= submitted]  # NaN (dropped job) compares False
    first_run = first_run.drop_duplicates("job_id").set_index("job_id")["timestamp"].reindex(jobs.index)
    submits_per_job = submits.groupby("job_id").size().reindex(jobs.index)
    evictions = events[kinds == EVICT].groupby("job_id").size().reindex(jobs.index, fill_value=0)

    submitted_at = jobs["timestamp"] / MICROSECONDS
    started_at = (first_run / MICROSECONDS).fillna(submitted_at)
    ended_at = last_end["timestamp"] / MICROSECONDS
    columns = {
        "pipeline": jobs["user"].fillna("") + ":" + jobs["logical_job_name"].fillna(""),
        "group": jobs["user"].fillna(""),
        "attempt_id": pd.Series(jobs.index.astype("str"), index=jobs.index),
        "submitted_at": submitted_at,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": ended_at - started_at,
        "outcome": last_end["event_type"].astype("int64").map(GOOGLE_OUTCOMES),
        "requested_s": np.nan,
        "x_scheduling_class": jobs["scheduling_class"],
        "x_missing_info": jobs["missing_info"].notna().astype("float64"),
        "post_evictions": evictions,
        "post_resubmits": submits_per_job - 1,
    }
    return _drop_negative_durations(columns, report)


# --- Standard Workload Format --------------------------------------------------------------------


def read_swf(paths: Sequence[str | Path], *, skip_bad: bool = False,
             progress: bool = True) -> tuple[pd.DataFrame, ReadReport]:
    """Read Standard Workload Format logs (``.swf``, optionally gzip): one row per job line.

    ``submitted_at`` is ``submit``, ``started_at`` is ``submit + max(wait, 0)`` (an unknown wait counts
    as none) and ``ended_at`` is ``started_at + run``, in the log's seconds. ``pipeline`` is
    ``user:executable`` (``user`` alone when the executable is unknown), ``group`` the user, and
    ``attempt_id`` is ``<log stem>/<job>`` (``<log stem>/<job>/<k>`` for the k-th line of a job number
    that has several lines, the partial executions of one job). ``requested_s`` is ``req_time``.
    ``x_req_procs``, ``x_req_time``, ``x_req_mem``, ``x_queue``, ``x_partition`` and ``x_alloc_procs``
    (allocated at start, before the outcome is known) are the submit attributes; ``post_avg_cpu`` and
    ``post_used_mem`` are observed after the job. -1 (unknown) becomes NaN everywhere.

    Status mapping (SWF 2.2 definition, Parallel Workloads Archive ``swf.html``):
        - 1 completed -> ``success``; 0 failed -> ``failure``; 5 cancelled -> ``canceled``.
        - 3 "last partial execution, job completed" -> ``success``, and 4 "last partial execution,
          job failed" -> ``failure``: the segment that ends the job carries the job's outcome.
        - 2 "partial execution, to be continued" -> ``crashed``: the system (checkpoint, swap-out,
          preemption) stopped a running segment that the job itself did not end, which is what
          predcheck calls a crash. Each of 2, 3 and 4 is counted in ``ReadReport.mapped``.
        - -1 (unknown, as in models) or any other value: dropped as ``status_unknown``.

    Dropped: ``run_time_unknown`` (run < 0, e.g. cancelled before start), then ``status_unknown``.
    Several files are read as parts of one log (user and executable numbers shared): read separate
    logs separately.
    """
    files = trace_files(paths, SWF_PATTERNS)
    report = ReadReport(files=len(files))
    logs = []
    with _progress_bar(files, "swf", progress) as bar:
        for number, path in enumerate(files, start=1):
            jobs, bad = _parse_or_find_bad_lines(path, _decompressed(path), _parse_swf,
                                                 _swf_line_problem, skip_bad)
            report.lines += len(jobs) + bad
            report.bad_lines_skipped += bad
            jobs["log"] = path.name.removesuffix(".gz").removesuffix(".swf")
            logs.append(jobs)
            bar.update(path.stat().st_size)
            bar.set_postfix(files=f"{number}/{len(files)}", lines=f"{report.lines:,}", refresh=False)
    return _history_frame(_swf_jobs(pd.concat(logs, ignore_index=True), report), report), report


def _parse_swf(data: bytes) -> pd.DataFrame:
    """The job lines of one log; ``_Malformed`` when a line has not 18 numeric fields."""
    try:
        jobs = pd.read_csv(io.BytesIO(data), sep=r"\s+", header=None, comment=";", dtype="float64", engine="c",
                           encoding="utf-8")
    except pd.errors.EmptyDataError:  # only comments and blank lines
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in SWF_FIELDS})
    # Without names, pandas takes the field count from the first line, raises on a longer line and
    # fills a shorter one with NaN; -1, not an empty field, marks an unknown value.
    if jobs.shape[1] != len(SWF_FIELDS) or jobs.isna().to_numpy().any():
        raise _Malformed(f"a line has not {len(SWF_FIELDS)} numeric fields")
    jobs.columns = list(SWF_FIELDS)
    return jobs


def _swf_line_problem(line: str) -> str | None:
    fields = line.split(";", 1)[0].split()
    if not fields:
        return None
    if len(fields) != len(SWF_FIELDS):
        return f"expected {len(SWF_FIELDS)} whitespace-separated fields, found {len(fields)}"
    for name, text in zip(SWF_FIELDS, fields):
        if problem := _number_problem(name, text):
            return problem
    return None


def _swf_jobs(jobs: pd.DataFrame, report: ReadReport) -> dict[str, object]:
    no_run = jobs["run"].to_numpy() < 0
    report.drop("run_time_unknown", int(no_run.sum()))
    known = jobs["status"].isin(list(SWF_STATUSES)).to_numpy()
    report.drop("status_unknown", int((~no_run & ~known).sum()))
    # Number the lines of one job before dropping any, so a partial execution keeps its place.
    segment = jobs.groupby(["log", "job"], sort=False).cumcount() + 1
    segments = segment.groupby([jobs["log"], jobs["job"]], sort=False).transform("size")
    keep = ~no_run & known
    jobs, segment, segments = jobs[keep], segment[keep], segments[keep]
    for status, (_, note) in SWF_STATUSES.items():
        if note and (count := int((jobs["status"] == status).sum())):
            report.mapped[note] = report.mapped.get(note, 0) + count

    def unknown_as_nan(name: str) -> pd.Series:
        return jobs[name].where(jobs[name] != SWF_UNKNOWN)

    user = _id_text(jobs["user"])
    executable = _id_text(jobs["executable"])
    job = jobs["log"] + "/" + _id_text(jobs["job"])
    started_at = jobs["submit"] + jobs["wait"].clip(lower=0)
    ended_at = started_at + jobs["run"]
    columns = {
        "pipeline": user.where(jobs["executable"] == SWF_UNKNOWN, user + ":" + executable),
        "group": user,
        "attempt_id": job.where(segments == 1, job + "/" + segment.astype("str")),
        "submitted_at": jobs["submit"],
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": ended_at - started_at,
        "outcome": jobs["status"].astype("int64").map({s: outcome for s, (outcome, _) in SWF_STATUSES.items()}),
        "requested_s": unknown_as_nan("req_time"),
        **{f"x_{name}": unknown_as_nan(name) for name in SWF_SUBMIT_ATTRIBUTES},
        **{f"post_{name}": unknown_as_nan(name) for name in SWF_OBSERVATIONS},
    }
    return _drop_negative_durations(columns, report)


# --- FlowBench -----------------------------------------------------------------------------------


def read_flowbench(paths: Sequence[str | Path], *, skip_bad: bool = False,
                   progress: bool = True) -> tuple[pd.DataFrame, ReadReport]:
    """Read FlowBench zips (one CSV per DAG run, one row per workflow step): one row per step run.

    The workflow is the zip's stem (``eht_difmap``). ``pipeline`` is ``workflow:transformation``, the
    transformation being ``kickstart_transformations`` or, when empty, the row name without its
    ``_ID<digits>`` suffix; ``group`` is the workflow; ``attempt_id`` is ``workflow/<csv>/<row name>``.
    ``submitted_at`` is ``submit`` (``ready`` when empty), ``started_at``/``ended_at`` are
    ``execute_start``/``execute_end`` (epoch seconds). ``outcome`` is ``failure`` when
    ``kickstart_status`` or ``kickstart_executables_exitcode`` is non-zero, else ``success``.
    ``anomaly`` is ``anomaly_type`` (``None`` for "None"). ``x_stage_in_bytes``; ``post_cpu_s``,
    ``post_read_bytes``, ``post_written_bytes``, ``post_utime``, ``post_stime`` (NaN when a workflow's
    CSVs lack the column).

    Dropped: ``no_execute_time`` (no execute start or end), ``ended_before_start``. CSV rows are read
    with the ``csv`` module (quoted fields hold commas): FlowBench CSVs are small.
    """
    files = trace_files(paths, FLOWBENCH_PATTERNS)
    report = ReadReport(files=len(files))
    rows: list[tuple] = []
    with _progress_bar(files, "flowbench", progress) as bar:
        for number, path in enumerate(files, start=1):
            rows.extend(_flowbench_zip_rows(path, skip_bad, report, bar))
            bar.set_postfix(files=f"{number}/{len(files)}", lines=f"{report.lines:,}", refresh=False)
    names = ("workflow", "member", "name", "transformation", "anomaly", *FLOWBENCH_NUMBERS)
    steps = pd.DataFrame.from_records(rows, columns=names)
    return _history_frame(_flowbench_steps(steps, report), report), report


def _flowbench_zip_rows(path: Path, skip_bad: bool, report: ReadReport, bar: tqdm) -> list[tuple]:
    """The step rows of every run CSV in one FlowBench zip, members in name order."""
    workflow = path.name.removesuffix(".zip")
    rows: list[tuple] = []
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted((m for m in archive.infolist() if m.filename.endswith(".csv") and not m.is_dir()),
                             key=lambda m: m.filename)
            for member in members:
                where = f"{path}!{member.filename}"
                source = f"{str(path)!r} member {member.filename!r}"
                try:
                    data = archive.read(member)
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise TraceFormatError(f"{source} is corrupt ({e}); download the zip again or leave it "
                                           "out of the paths", path=where) from e
                rows.extend(_flowbench_csv_rows(source, where, (workflow, member.filename), data, skip_bad,
                                                report))
                bar.update(member.compress_size)
    except zipfile.BadZipFile as e:
        raise TraceFormatError(f"{str(path)!r} is not a readable zip file ({e}); download it again or leave it "
                               "out of the paths", path=str(path)) from e
    bar.update(max(0, path.stat().st_size - sum(m.compress_size for m in members)))
    return rows


def _flowbench_csv_rows(source: str, where: str, run: tuple[str, str], data: bytes, skip_bad: bool,
                        report: ReadReport) -> list[tuple]:
    """(workflow, member, name, transformation, anomaly, *FLOWBENCH_NUMBERS) per data row of one run's CSV."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TraceFormatError(f"{source} line {line}: it is not UTF-8 text; the CSV is corrupt", path=where,
                               line=line) from e
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple] = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        position = {name: i for i, name in enumerate(header)}
        missing = [name for name in FLOWBENCH_REQUIRED if name not in position]
        if missing:
            raise TraceFormatError(f"{source} line 1: the header lacks the FlowBench columns {missing}; is this "
                                   "a FlowBench CSV?", path=where, line=1)
        numbers = [(name, position.get(name)) for name in FLOWBENCH_NUMBERS]
        transformation_at, anomaly_at = position["kickstart_transformations"], position["anomaly_type"]
        line = reader.line_num
        for row in reader:
            first_line, line = line + 1, reader.line_num
            if not row:
                continue
            report.lines += 1
            problem, values = None, []
            if len(row) != len(header):
                problem = f"expected {len(header)} comma-separated fields, found {len(row)}"
            else:
                for column, at in numbers:
                    value = row[at] if at is not None else ""
                    if value and (problem := _number_problem(column, value)):
                        break
                    values.append(float(value) if value else math.nan)
            if problem is None:
                rows.append((*run, row[0], row[transformation_at], row[anomaly_at], *values))
            elif skip_bad:
                report.bad_lines_skipped += 1
            else:
                raise TraceFormatError(f"{source} line {first_line}: {problem}; {SKIP_HINT}", path=where,
                                       line=first_line)
    except csv.Error as e:
        raise TraceFormatError(f"{source} line {reader.line_num}: {e}; the CSV is corrupt", path=where,
                               line=reader.line_num) from e
    return rows


def _flowbench_steps(steps: pd.DataFrame, report: ReadReport) -> dict[str, object]:
    timed = steps["execute_start"].notna() & steps["execute_end"].notna()
    report.drop("no_execute_time", int((~timed).sum()))
    steps = steps[timed]
    transformation = steps["transformation"].where(
        steps["transformation"] != "", steps["name"].str.replace(STEP_ID_SUFFIX, "", regex=True))
    failed = (steps["kickstart_status"].fillna(0) != 0) | (steps["kickstart_executables_exitcode"].fillna(0) != 0)
    columns = {
        "pipeline": steps["workflow"] + ":" + transformation,
        "group": steps["workflow"],
        "attempt_id": steps["workflow"] + "/" + steps["member"] + "/" + steps["name"],
        "submitted_at": steps["submit"].fillna(steps["ready"]).fillna(steps["execute_start"]),
        "started_at": steps["execute_start"],
        "ended_at": steps["execute_end"],
        "duration_s": steps["execute_end"] - steps["execute_start"],
        "outcome": failed.map({True: "failure", False: "success"}),
        "requested_s": np.nan,
        **{column: steps[source] for column, source in FLOWBENCH_MEASURES.items()},
        "anomaly": steps["anomaly"].where(~steps["anomaly"].isin(FLOWBENCH_NO_ANOMALY), None).astype(object),
    }
    return _drop_negative_durations(columns, report)
