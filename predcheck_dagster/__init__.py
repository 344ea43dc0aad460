"""predcheck-dagster: predictive checkpointing for Dagster.

Importing this package has no side effects and stays light: ``instrument`` and what it wires
(hooks, resource, IO manager, sensor factories) load at once, the other names on first use
(PEP 562), so a step process that only runs the hooks never imports the checkpoint store
(fsspec) or the metrics store before it records, and nothing on the step side imports mlflow,
torch, xgboost, great_expectations or pandas.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Adjustments": "resume_plan", "CheckpointCorruptError": "errors", "CheckpointIOManager": "io_manager",
    "CheckpointMismatchError": "errors", "CheckpointNotFoundError": "errors", "CheckpointStore": "checkpoint_store",
    "Checkpointer": "checkpointer", "Manifest": "checkpoint_store", "MetricsStore": "metrics_store",
    "MetricsStoreUnavailableError": "errors", "PredcheckError": "errors", "PredcheckResource": "resource",
    "Prediction": "checkpoint_store", "RegistryUnavailableError": "errors", "ResumePlan": "resume_plan",
    "build_forecast_sensor": "sensors", "build_resume_sensor": "sensors", "instrument": "instrument",
    "predcheck_hooks": "hooks",
}
__all__ = [
    "Adjustments", "CheckpointCorruptError", "CheckpointIOManager", "CheckpointMismatchError",
    "CheckpointNotFoundError", "CheckpointStore", "Checkpointer", "Manifest", "MetricsStore",
    "MetricsStoreUnavailableError", "PredcheckError", "PredcheckResource", "Prediction",
    "RegistryUnavailableError", "ResumePlan", "build_forecast_sensor", "build_resume_sensor",
    "instrument", "predcheck_hooks",
]

# Bound now: the submodule of the same name would otherwise shadow the function once imported.
from predcheck_dagster.instrument import instrument  # noqa: E402

if TYPE_CHECKING:
    from predcheck_dagster.checkpoint_store import CheckpointStore, Manifest, Prediction
    from predcheck_dagster.checkpointer import Checkpointer
    from predcheck_dagster.errors import (
        CheckpointCorruptError,
        CheckpointMismatchError,
        CheckpointNotFoundError,
        MetricsStoreUnavailableError,
        PredcheckError,
        RegistryUnavailableError,
    )
    from predcheck_dagster.hooks import predcheck_hooks
    from predcheck_dagster.io_manager import CheckpointIOManager
    from predcheck_dagster.metrics_store import MetricsStore
    from predcheck_dagster.resource import PredcheckResource
    from predcheck_dagster.resume_plan import Adjustments, ResumePlan
    from predcheck_dagster.sensors import build_forecast_sensor, build_resume_sensor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'predcheck_dagster' has no attribute {name!r}")
    value = getattr(import_module(f"predcheck_dagster.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
