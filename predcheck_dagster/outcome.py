"""How a step attempt's outcome and error are labelled: the deadline rule and the error fingerprint.

Pure (no dagster): the hooks, the reconciler and the history import all label attempts with these
functions, so a step gets the same label and fingerprint whichever of them records it.

The deadline rule:
    A step's deadline is the tag ``predcheck/deadline_s`` (seconds) on the op (definition or
    invocation tags: the step's tags), else the same tag on the run. An attempt whose duration
    (STEP_START to its end) is at least the deadline is labelled ``timeout``, whatever it would
    otherwise be: ``success`` (finished late), ``failure`` or ``crashed`` (failed or was killed
    past the deadline). Its error class and fingerprint are kept. predcheck labels; it does not
    stop a step at its deadline.

The error fingerprint:
    sha1 of the error's class name, its message normalised (paths, hexadecimal and numbers
    replaced by placeholders, whitespace collapsed) and the innermost ``FINGERPRINT_FRAMES``
    frames of its traceback that are not Dagster's own machinery, each as ``file basename:function``
    (no line numbers). The same bug in two runs gives the same fingerprint; an edit that moves
    lines does not change it; a different raise site, class or message does.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

DEADLINE_TAG = "predcheck/deadline_s"
TIMEOUT = "timeout"
LABELLED_BY_DEADLINE = frozenset({"success", "failure", "crashed"})
FINGERPRINT_FRAMES = 5
FINGERPRINT_MESSAGE_CHARS = 1000

# Patterns as strings: ``re`` compiles and caches them on first use, so importing this module (as
# every step process does) compiles nothing.
# Frames of Dagster's execution machinery (dagster/_core, dagster/_utils, dagster_shared, ...)
# surround every user error; they are skipped so a Dagster upgrade does not change fingerprints.
_FRAMEWORK_PATH = r"[/\\](?:dagster[/\\]_|dagster_shared[/\\]|dagster_pipes[/\\])"
_STACK_FRAME = r'File "(?P<file>[^"]+)", line \d+, in (?P<function>[^\s]+)'
_PATH = r"(?:[A-Za-z]:)?(?:[\\/][\w.\-~@+=]+){2,}[\\/]?|[\w.\-]+(?:[\\/][\w.\-]+)+\.\w+"
_UUID = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
_HEX = r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"
_NUMBER = r"[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?"
_SPACE = r"\s+"


# ---- deadlines ------------------------------------------------------------------------------
def parse_deadline(value: str | None) -> float | None:
    """A deadline tag's seconds; None when unset, unparsable, not finite or not positive."""
    try:
        seconds = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else None


def deadline_from_tags(op_tags: Mapping[str, str] | None, run_tags: Mapping[str, str] | None) -> float | None:
    """The step's deadline: the op's ``predcheck/deadline_s`` tag wins over the run's."""
    op_deadline = parse_deadline((op_tags or {}).get(DEADLINE_TAG))
    return op_deadline if op_deadline is not None else parse_deadline((run_tags or {}).get(DEADLINE_TAG))


def label_outcome(outcome: str, duration_s: float | None, deadline_s: float | None) -> str:
    """``timeout`` for an attempt that lasted at least its deadline, else ``outcome`` unchanged."""
    if deadline_s is not None and duration_s is not None and outcome in LABELLED_BY_DEADLINE \
            and duration_s >= deadline_s:
        return TIMEOUT
    return outcome


# ---- error fingerprints ---------------------------------------------------------------------
def normalise_message(message: str | None) -> str:
    """The message without what changes from run to run: paths, hex ids and numbers."""
    text = (message or "")[:FINGERPRINT_MESSAGE_CHARS * 4]
    text = re.sub(_PATH, "<path>", text)
    text = re.sub(_UUID, "<hex>", text)
    text = re.sub(_HEX, "<hex>", text)
    text = re.sub(_NUMBER, "<n>", text)
    return re.sub(_SPACE, " ", text).strip()[:FINGERPRINT_MESSAGE_CHARS]


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path)[-1]


def fingerprint_frames(frames: Iterable[tuple[str, str]]) -> list[str]:
    """``basename:function`` of the innermost non-framework frames, innermost last.

    Args:
        frames: (file path, function name) from the outermost to the innermost frame.
    """
    own = [f"{_basename(path)}:{function}" for path, function in frames if not re.search(_FRAMEWORK_PATH, path)]
    return own[-FINGERPRINT_FRAMES:]


def error_fingerprint(cls_name: str, message: str | None, frames: Iterable[tuple[str, str]]) -> str:
    """sha1 hex of the class, the normalised message and the normalised innermost frames."""
    parts = [cls_name, normalise_message(message), *fingerprint_frames(frames)]
    return hashlib.sha1("\n".join(parts).encode("utf-8", "replace")).hexdigest()


def frames_of_traceback(tb: TracebackType | None) -> list[tuple[str, str]]:
    """(file, function) of a live traceback, outermost first."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, code.co_name))
        tb = tb.tb_next
    return frames


def frames_of_stack(stack: Sequence[str] | None) -> list[tuple[str, str]]:
    """(file, function) parsed from formatted traceback lines (Dagster's ``SerializableErrorInfo.stack``)."""
    return [(m["file"], m["function"]) for line in stack or () for m in re.finditer(_STACK_FRAME, line)]


def fingerprint_exception(exc: BaseException) -> str:
    """The fingerprint of a live exception (the hooks' path)."""
    return error_fingerprint(type(exc).__name__, str(exc), frames_of_traceback(exc.__traceback__))


def fingerprint_error_info(cls_name: str, message: str | None, stack: Sequence[str] | None) -> str:
    """The fingerprint of a serialized error (the event log's path); equal to ``fingerprint_exception``
    of the same exception, since Dagster's message is ``"[module.]{class}: {str(exc)}"``."""
    text = (message or "").strip()
    head = re.match(rf"(?:\S+\.)?{re.escape(cls_name)}(?::\s?|$)", text)
    if head:
        text = text[head.end():]
    return error_fingerprint(cls_name, text, frames_of_stack(stack))
