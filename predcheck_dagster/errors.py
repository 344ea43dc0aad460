"""One error hierarchy for predcheck.

Every subclass also inherits the builtin it refines, so callers can catch it across backends
(``except FileNotFoundError`` catches a missing checkpoint on local disk, ``memory://`` or S3).
Messages name the object with ``!r`` and say what to do next.
"""

from __future__ import annotations


class PredcheckError(Exception):
    """Base class of every error raised by predcheck."""


class ConfigError(PredcheckError, ValueError):
    """A configuration value is malformed or inconsistent."""


class InvalidPathComponentError(ConfigError):
    """A path component from run config or tags would escape the checkpoint root."""


class CheckpointNotFoundError(PredcheckError, FileNotFoundError):
    """A named checkpoint does not exist (or has no committed manifest)."""


class CheckpointCorruptError(PredcheckError, OSError):
    """A checkpoint's manifest or payload is unreadable, truncated, or fails its sha256."""


class CheckpointMismatchError(PredcheckError, ValueError):
    """A checkpoint belongs to another job, step, or code version than the one resuming."""


class UnsafeSerializationError(PredcheckError, TypeError):
    """An object can only be stored with pickle, and pickle was not opted into."""


class MetricsStoreUnavailableError(PredcheckError, ConnectionError):
    """The metrics store cannot be reached or written."""


class RegistryUnavailableError(PredcheckError, ConnectionError):
    """The MLflow tracking server or model registry cannot be reached."""


class TrainingDataError(PredcheckError, ValueError):
    """The step history cannot train a forecaster (too few rows, one class only, ...)."""


class TraceFormatError(PredcheckError, ValueError):
    """A real trace file (Google 2011, SWF, FlowBench) is malformed: a bad line, or a corrupt gzip or zip.

    ``path`` names the file (for FlowBench, ``zip!member``) and ``line`` the 1-based line, when known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class EvaluationInputError(PredcheckError, ValueError):
    """Labels and probabilities cannot be scored or calibrated (lengths differ, values out of range, ...)."""


class RelaunchError(PredcheckError, RuntimeError):
    """A re-execution could not be launched."""


class WebserverUnreachableError(RelaunchError, ConnectionError):
    """The Dagster webserver that launches re-executions cannot be reached; nothing was launched."""
