"""predcheck-dagster: predictive checkpointing for Dagster.

Importing this package has no side effects and stays light: no mlflow, torch, xgboost,
great_expectations or pandas on the step side.
"""

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
from predcheck_dagster.instrument import instrument
from predcheck_dagster.io_manager import CheckpointIOManager
from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.resource import PredcheckResource
from predcheck_dagster.resume_plan import Adjustments, ResumePlan
from predcheck_dagster.sensors import build_forecast_sensor, build_resume_sensor

__version__ = "0.1.0"

__all__ = [
    "Adjustments", "CheckpointCorruptError", "CheckpointIOManager", "CheckpointMismatchError",
    "CheckpointNotFoundError", "CheckpointStore", "Checkpointer", "Manifest", "MetricsStore",
    "MetricsStoreUnavailableError", "PredcheckError", "PredcheckResource", "Prediction",
    "RegistryUnavailableError", "ResumePlan", "build_forecast_sensor", "build_resume_sensor",
    "instrument", "predcheck_hooks",
]
