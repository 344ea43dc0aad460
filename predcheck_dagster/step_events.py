"""Each step's profiler, driven by the step's own Dagster events in the step's process.

``PredcheckResource.setup_for_execution`` registers a ``StepEventListener`` on the instance for
the run (``DagsterInstance.add_event_listener``). Dagster logs every event synchronously where it
happens, and calls the listener right after storing it, so the listener sees, in order and in the
step's process, the events that bound the automatic stages::

    STEP_START | STEP_RESTARTED          the attempt begins (the profiler starts, sampling too)
    LOADED_INPUT, STEP_INPUT             inputs loaded: the time up to the last one is dagster/load_inputs
    STEP_OUTPUT ... HANDLED_OUTPUT       the IO manager handles an output: dagster/handle_outputs
    STEP_SUCCESS | STEP_FAILURE | STEP_UP_FOR_RETRY   the attempt ends; sampling stops
    everything else from the first input event on    dagster/compute

The multiprocess executor initialises resources in each step's process right before STEP_START;
the in-process executor once per run, before the first step. Wall-clock boundaries are the events'
own timestamps (the times Dagster shows); CPU, disk and memory are read when the listener runs,
right after Dagster stored the event, so the cost of storing an event counts towards the stage
before it.

Guarantees:
    - The listener never raises into Dagster's event logging; its errors are counted
      (``StepEventListener.errors``) and logged at debug level.
    - Events of steps running in other processes (the multiprocess executor's parent process
      also sees its children's events) are ignored: only events whose pid is this process's count.
"""

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from dagster import DagsterEventType, DagsterInstance, EventLogEntry

from predcheck_dagster.profiler import StepProfiler

LOG = logging.getLogger("predcheck.step_events")

# The profiler of each step attempt running in this process, by (run_id, step_key). The hooks
# take it out when the step ends.
STEP_PROFILERS: dict[tuple[str, str], StepProfiler] = {}

_STARTS = frozenset({DagsterEventType.STEP_START.value, DagsterEventType.STEP_RESTARTED.value})
_INPUTS = frozenset({DagsterEventType.LOADED_INPUT.value, DagsterEventType.STEP_INPUT.value})
_ENDS = frozenset({DagsterEventType.STEP_SUCCESS.value, DagsterEventType.STEP_FAILURE.value,
                   DagsterEventType.STEP_UP_FOR_RETRY.value})
# Events only the op's own code causes: compute has begun.
_COMPUTE = frozenset({DagsterEventType.ASSET_MATERIALIZATION.value, DagsterEventType.ASSET_OBSERVATION.value,
                      DagsterEventType.STEP_EXPECTATION_RESULT.value, DagsterEventType.ASSET_CHECK_EVALUATION.value})
_TYPE_CHECKED = DagsterEventType.STEP_INPUT.value
_OUTPUT = DagsterEventType.STEP_OUTPUT.value
_HANDLED = DagsterEventType.HANDLED_OUTPUT.value

_LISTENERS: "weakref.WeakKeyDictionary[DagsterInstance, dict[str, StepEventListener]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class StepEventListener:
    """Turns one run's step events in this process into profiler calls.

    Args:
        run_id: the run whose events this listener receives.
        make_profiler: builds the profiler of a step attempt (with its sink and settings).
    """

    def __init__(self, run_id: str, make_profiler: Callable[[str], StepProfiler]) -> None:
        self.run_id = run_id
        self.make_profiler = make_profiler
        self.pid = os.getpid()
        self.errors = 0

    def __call__(self, entry: EventLogEntry) -> None:
        try:
            event = entry.dagster_event
            if event is None or event.step_key is None or (event.pid is not None and event.pid != self.pid):
                return
            kind = event.event_type_value
            key = (self.run_id, event.step_key)
            if kind in _STARTS:
                previous = STEP_PROFILERS.get(key)
                if previous is not None:  # an earlier attempt (retried) that no hook recorded
                    previous.release()
                STEP_PROFILERS[key] = self.make_profiler(event.step_key).start(at=entry.timestamp)
                return
            profiler = STEP_PROFILERS.get(key)
            if profiler is None:
                return
            if kind in _INPUTS:
                profiler.inputs_loaded(entry.timestamp, type_checked=kind == _TYPE_CHECKED)
            elif kind == _OUTPUT:
                profiler.output_started(entry.timestamp)
            elif kind == _HANDLED:
                profiler.output_handled(entry.timestamp)
            elif kind in _ENDS:
                profiler.end(entry.timestamp)
            elif kind in _COMPUTE:
                profiler.computing(entry.timestamp)
        except Exception as e:  # noqa: BLE001 - never into Dagster's event logging
            self.errors += 1
            LOG.debug("predcheck step event listener error: %s: %s", type(e).__name__, e)


def listen(instance: DagsterInstance, run_id: str, make_profiler: Callable[[str], StepProfiler]) -> None:
    """Register the listener of ``run_id`` on ``instance`` once per process."""
    with _LOCK:
        runs = _LISTENERS.setdefault(instance, {})
        if run_id in runs:
            return
        listener = runs[run_id] = StepEventListener(run_id, make_profiler)
    instance.add_event_listener(run_id, listener)


def unlisten(instance: DagsterInstance, run_id: str) -> None:
    """Remove the run's listener and end what it still profiles (steps without hooks)."""
    with _LOCK:
        listener = _LISTENERS.get(instance, {}).pop(run_id, None)
    if listener is None:
        return
    subscribers: Any = getattr(instance, "_subscribers", None)  # no public removal API in Dagster 1.13
    if subscribers is not None and listener in subscribers.get(run_id, ()):
        subscribers[run_id].remove(listener)
    for key in [k for k in STEP_PROFILERS if k[0] == run_id]:
        STEP_PROFILERS.pop(key).release()
