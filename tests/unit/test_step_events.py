"""The listener that drives each step's profiler from the step's Dagster events."""

from __future__ import annotations

import os
import threading
import time

import pytest
from dagster import AssetMaterialization, DagsterEvent, EventLogEntry
from dagster._core.events import (
    EngineEventData,
    HandledOutputData,
    LoadedInputData,
    StepInputData,
    StepMaterializationData,
    StepOutputData,
    StepSuccessData,
)
from dagster._core.execution.plan.objects import TypeCheckData
from dagster._core.execution.plan.outputs import StepOutputHandle

from predcheck_dagster.profiler import COMPUTE, HANDLE_OUTPUTS, LOAD_INPUTS, StepProfiler
from predcheck_dagster.step_events import STEP_PROFILERS, StepEventListener

RUN = "run-events"


def seconds(value: float):
    """Equal to within 10 µs: differences of epoch timestamps (~1.8e9 s) carry about 1e-7 s of noise."""
    return pytest.approx(value, abs=1e-5)


def _data(kind: str, step_key: str | None):
    """The event-specific data Dagster requires of each event type used here."""
    return {
        "LOADED_INPUT": lambda: LoadedInputData(input_name="rows", manager_key="io_manager"),
        "STEP_INPUT": lambda: StepInputData(input_name="rows", type_check_data=TypeCheckData(success=True,
                                                                                           label="rows")),
        "STEP_OUTPUT": lambda: StepOutputData(step_output_handle=StepOutputHandle(step_key or "", "result")),
        "HANDLED_OUTPUT": lambda: HandledOutputData(output_name="result", manager_key="io_manager"),
        "ASSET_MATERIALIZATION": lambda: StepMaterializationData(AssetMaterialization(asset_key="rows")),
        "STEP_SUCCESS": lambda: StepSuccessData(duration_ms=1.0),
        "ENGINE_EVENT": lambda: EngineEventData(),
    }.get(kind, lambda: None)()


def entry(kind: str | None, at: float, step_key: str | None = "crunch", pid: int | None = None) -> EventLogEntry:
    """A stored event as Dagster hands it to an event listener (``kind`` None: a plain log message)."""
    event = None if kind is None else DagsterEvent(
        event_type_value=kind, job_name="etl", step_key=step_key, pid=os.getpid() if pid is None else pid,
        event_specific_data=_data(kind, step_key))
    return EventLogEntry(error_info=None, level=10, user_message="", run_id=RUN, timestamp=at, step_key=step_key,
                         job_name="etl", dagster_event=event)


@pytest.fixture
def made() -> list[StepProfiler]:
    profilers: list[StepProfiler] = []
    yield profilers
    for p in profilers:
        p.stop()
    for key in [k for k in STEP_PROFILERS if k[0] == RUN]:
        STEP_PROFILERS.pop(key)


@pytest.fixture
def listener(made) -> StepEventListener:
    def make(step_key: str) -> StepProfiler:
        profiler = StepProfiler(RUN, step_key, sink=None, interval_s=0.01)
        made.append(profiler)
        return profiler

    return StepEventListener(RUN, make)


def test_a_step_s_events_become_its_automatic_stages(listener, made):
    t0 = time.time()
    for kind, dt in (("STEP_START", 0.0), (None, 0.05), ("LOADED_INPUT", 0.1), ("STEP_INPUT", 0.15),
                     ("STEP_OUTPUT", 0.6), ("HANDLED_OUTPUT", 0.7), ("ASSET_MATERIALIZATION", 0.75),
                     ("STEP_SUCCESS", 0.8)):
        listener(entry(kind, t0 + dt))
    [profiler] = made
    assert STEP_PROFILERS[(RUN, "crunch")] is profiler
    assert profiler.ended_at == t0 + 0.8
    assert profiler.stop()["stage_durations"] == {
        LOAD_INPUTS: seconds(0.15), COMPUTE: seconds(0.55), HANDLE_OUTPUTS: seconds(0.1)}
    assert not any(t.name == "predcheck-sampler-crunch" for t in threading.enumerate())  # stopped at the end event


def test_events_of_other_processes_and_run_events_are_ignored(listener, made):
    listener(entry("STEP_START", time.time(), pid=os.getpid() + 1))  # a child's event seen by the run worker
    listener(entry("ENGINE_EVENT", time.time(), step_key=None))
    assert made == [] and (RUN, "crunch") not in STEP_PROFILERS


def test_a_retried_attempt_in_the_same_process_gets_a_new_profiler(listener, made):
    t0 = time.time()
    listener(entry("STEP_START", t0))
    listener(entry("STEP_UP_FOR_RETRY", t0 + 0.1))
    listener(entry("STEP_RESTARTED", t0 + 0.2))
    first, second = made
    assert first.ended_at == t0 + 0.1 and second.started_at == t0 + 0.2
    assert STEP_PROFILERS[(RUN, "crunch")] is second


def test_the_listener_never_raises_into_dagster(made):
    def broken(step_key: str) -> StepProfiler:
        raise MemoryError("no room for a profiler")

    listener = StepEventListener(RUN, broken)
    listener(entry("STEP_START", time.time()))  # would otherwise propagate into Dagster's event logging
    assert listener.errors == 1
