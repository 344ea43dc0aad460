"""Great-expectations checks on the step history, and blocking Dagster asset checks that run them.

The forecaster learns from ``step_runs`` (one row per step attempt, see ``metrics_store``). History
with null ids, negative durations, attempts that end before they start, unknown outcomes, or a
single class trains a model that looks fine and predicts nothing; these checks stop it first.

``validate_step_history`` is the core: it runs real great-expectations (GX 1.x) expectations on a
DataFrame through an ephemeral GX context built once per process, and returns one ``HistoryCheck``
per named group. ``build_step_history_checks`` wraps each group in a blocking ``@asset_check``.

Guarantees:
    - great_expectations (2.6 s to import) and pandas are imported on first use, not at import.
    - GX progress bars are off and its INFO logging is quiet, unless you configured its logger.
    - A failed check (severity ERROR, ``blocking=True``) fails its check step; Dagster 1.13 then
      skips every asset *in the same run* that reads the checked asset (it adds the blocking
      check's output as an extra upstream of those assets, ``asset_job.build_node_deps``).
"""

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    asset_check,
)

from predcheck_dagster.errors import ConfigError, TrainingDataError
from predcheck_dagster.metrics_store import OUTCOMES

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("job", "step_key", "run_id", "started_at", "ended_at", "duration_s", "outcome")
NON_NEGATIVE_COLUMNS = (  # optional resource columns of step_runs: checked where present
    "cpu_s", "peak_rss_bytes", "mean_rss_bytes", "read_bytes", "write_bytes", "net_bytes", "input_bytes",
    "output_bytes",
)
FAILED_OUTCOMES = ("failure", "crashed", "timeout")
FAILED_COLUMN = "predcheck_failed"  # derived: 1.0 failed attempt, 0.0 success, NaN unknown outcome
EARLIEST_START = 946_684_800.0  # 2000-01-01T00:00:00Z, epoch seconds
FUTURE_SLACK_S = 300.0  # clock skew tolerated between the recording host and the checker
DEFAULT_MIN_ROWS = 8
DEFAULT_MIN_FAILURE_RATE = 0.01
DEFAULT_MAX_FAILURE_RATE = 0.9
MAX_EXAMPLES = 10
INDEX_COLUMNS = ("run_id", "step_key", "attempt")  # identify a failing row in the examples

NOT_NULL, RANGES, TIMESTAMP_ORDER, LABEL_RATE = (
    "history_not_null", "history_ranges", "history_timestamp_order", "history_label_rate")
CHECK_DESCRIPTIONS = {
    NOT_NULL: "The columns that identify and label a step attempt are present and never null.",
    RANGES: "Durations and resource counters are non-negative; outcomes are success|failure|crashed|timeout.",
    TIMESTAMP_ORDER: "Every attempt ends at or after it starts; start and end lie between 2000-01-01 and now.",
    LABEL_RATE: "Enough attempts to learn from, both outcomes present, and a plausible failure rate.",
}
CHECK_NAMES = tuple(CHECK_DESCRIPTIONS)

META_KEY = "predcheck_key"  # tags each GX expectation with "check name|expectation text"

_GX_LOCK = threading.Lock()
_GX_BATCH_DEFINITION: Any = None


@dataclass(frozen=True)
class HistoryCheck:
    """The outcome of one named group of expectations on the step history.

    Attributes:
        name: one of ``CHECK_NAMES``.
        passed: every expectation of the group succeeded in great-expectations.
        description: what the check protects, in one sentence.
        observed: per expectation (keyed by its text): GX's ``success`` and what it observed
            (``unexpected_count``, ``partial_unexpected_list``, ``observed_value``, ``error`` ...).
        expectation: the group's expectations as text, ``"; "``-separated.
        failing_rows: rows that broke a row-wise expectation of the group (a row counts once per
            expectation it breaks).
        examples: up to ``MAX_EXAMPLES`` failing rows: their ids and offending values.
    """

    name: str
    passed: bool
    description: str
    observed: dict[str, Any]
    expectation: str
    failing_rows: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


def validate_step_history(df: "pd.DataFrame", *, min_rows: int = DEFAULT_MIN_ROWS,
                          min_failure_rate: float = DEFAULT_MIN_FAILURE_RATE,
                          max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE, now: float | None = None,
                          only: Collection[str] | None = None) -> list[HistoryCheck]:
    """Run the great-expectations checks on a step history; one ``HistoryCheck`` per named group.

    Args:
        df: rows shaped like the metrics store's ``step_runs``; ``started_at`` / ``ended_at`` as
            epoch seconds (float) or datetimes.
        min_rows: fewest attempts to train on.
        min_failure_rate, max_failure_rate: bounds of the fraction of failed attempts (outcome in
            failure|crashed|timeout) among attempts with a known outcome.
        now: epoch seconds that count as "now" for the not-in-the-future bound (default: the clock).
        only: run just these named checks (default: all of ``CHECK_NAMES``), in ``CHECK_NAMES`` order.

    Returns:
        The checks in ``CHECK_NAMES`` order: history_not_null, history_ranges,
        history_timestamp_order, history_label_rate.

    Raises:
        ConfigError: an unknown check name or inconsistent bounds.
    """
    names = _selected(only)
    _check_bounds(min_rows, min_failure_rate, max_failure_rate)
    import great_expectations as gx

    data = _prepared(df)
    now = time.time() if now is None else now
    planned = _plan(set(data.columns), names, min_rows, min_failure_rate, max_failure_rate, now)
    index_columns = [c for c in INDEX_COLUMNS if c in data.columns]  # GX fails map expectations on absent ones
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES,
                     "unexpected_index_column_names": index_columns}
    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": data})
        suite = gx.ExpectationSuite(name="predcheck_step_history")  # add_expectation needs a context: built above
        for expectation in {id(e): e for _, _, e in planned}.values():
            suite.add_expectation(expectation)
        validation = batch.validate(suite, result_format=result_format)
    by_key = {r.expectation_config.meta[META_KEY]: r for r in validation.results}  # GX reorders results
    return [_summarise(name, [(text, by_key[e.meta[META_KEY]]) for group, text, e in planned if group == name])
            for name in names]


def build_step_history_checks(asset_key: "str | Sequence[str] | AssetKey | AssetsDefinition",
                              history_loader: Callable[[AssetCheckExecutionContext], "pd.DataFrame"] | None = None,
                              *, blocking: bool = True, min_rows: int = DEFAULT_MIN_ROWS,
                              min_failure_rate: float = DEFAULT_MIN_FAILURE_RATE,
                              max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE) -> list[AssetChecksDefinition]:
    """One blocking ``@asset_check`` per named check (``CHECK_NAMES``) on the step-history asset.

    Args:
        asset_key: the step-history asset (its key, or the asset itself).
        history_loader: how a check gets the DataFrame. ``None`` (default): the check takes the
            asset's value as its input, loaded by the asset's IO manager. A callable: the check
            calls it with its context instead (for an asset whose value no IO manager can load,
            e.g. one that writes to the metrics store); the asset is then a plain dependency.
        blocking: ``True`` keeps assets downstream of the step history from materialising in the
            same run when a check fails; ``False`` only reports.
        min_rows, min_failure_rate, max_failure_rate: as in ``validate_step_history``.

    Raises:
        ConfigError: inconsistent bounds, when the checks are defined rather than when they run.

    Guarantees:
        - Every result has severity ERROR and metadata: ``expectation`` (text), ``observed`` (JSON),
          ``failing_rows``, ``examples`` (JSON), ``rows`` and ``great_expectations_version``.
        - A history that is not a DataFrame fails the check step with TrainingDataError, which
          blocks downstream assets too.
    """
    _check_bounds(min_rows, min_failure_rate, max_failure_rate)
    if isinstance(asset_key, AssetsDefinition):
        key = asset_key.key
    else:
        key = AssetKey.from_coercible(asset_key)
    validate_kwargs = {"min_rows": min_rows, "min_failure_rate": min_failure_rate,
                       "max_failure_rate": max_failure_rate}
    return [_build_check(key, name, history_loader, blocking, validate_kwargs) for name in CHECK_NAMES]


def _build_check(key: AssetKey, name: str, history_loader: Callable[[AssetCheckExecutionContext], Any] | None,
                 blocking: bool, validate_kwargs: Mapping[str, Any]) -> AssetChecksDefinition:
    def evaluate(context: AssetCheckExecutionContext, history: Any) -> AssetCheckResult:
        frame = _as_frame(history, key)
        (result,) = validate_step_history(frame, only=[name], **validate_kwargs)
        context.log.info(f"{name} on {key.to_user_string()}: {'passed' if result.passed else 'FAILED'}; "
                         f"{result.failing_rows} failing rows; {result.expectation}")
        return _check_result(result, len(frame))

    decorate = asset_check(asset=key, name=name, description=CHECK_DESCRIPTIONS[name], blocking=blocking,
                           compute_kind="great_expectations")
    if history_loader is None:
        def check_with_input(context: AssetCheckExecutionContext, step_history) -> AssetCheckResult:
            return evaluate(context, step_history)

        return decorate(check_with_input)

    def check_with_loader(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return evaluate(context, history_loader(context))

    return decorate(check_with_loader)


def _check_result(result: HistoryCheck, rows: int) -> AssetCheckResult:
    from great_expectations import __version__ as gx_version

    return AssetCheckResult(
        passed=result.passed,
        severity=AssetCheckSeverity.ERROR,
        description=result.description,
        metadata={
            "expectation": MetadataValue.text(result.expectation),
            "observed": MetadataValue.json(result.observed),
            "failing_rows": MetadataValue.int(result.failing_rows),
            "examples": MetadataValue.json(result.examples),
            "rows": MetadataValue.int(rows),
            "great_expectations_version": MetadataValue.text(gx_version),
        })


def _as_frame(history: Any, key: AssetKey) -> "pd.DataFrame":
    import pandas as pd

    if not isinstance(history, pd.DataFrame):
        raise TrainingDataError(
            f"step history asset {key.to_user_string()!r} gave a {type(history).__name__}, not a pandas DataFrame: "
            "return a DataFrame from the asset, or pass history_loader= to build_step_history_checks")
    return history


def _check_bounds(min_rows: int, min_failure_rate: float, max_failure_rate: float) -> None:
    if not 0.0 <= min_failure_rate <= max_failure_rate <= 1.0:
        raise ConfigError(f"failure-rate bounds must satisfy 0 <= min <= max <= 1, got "
                          f"min_failure_rate={min_failure_rate!r}, max_failure_rate={max_failure_rate!r}")
    if min_rows < 1:
        raise ConfigError(f"min_rows must be at least 1, got {min_rows!r}")


def _meta_key(group: str, text: str) -> str:
    return f"{group}|{text}"


def _selected(only: Collection[str] | None) -> list[str]:
    if only is None:
        return list(CHECK_NAMES)
    unknown = sorted(set(only) - set(CHECK_NAMES))
    if unknown:
        raise ConfigError(f"unknown step-history checks {unknown!r}: choose from {list(CHECK_NAMES)!r}")
    return [name for name in CHECK_NAMES if name in only]


def _prepared(df: "pd.DataFrame") -> "pd.DataFrame":
    """A copy with timestamps as epoch seconds and the derived 0/1 ``FAILED_COLUMN``."""
    import pandas as pd

    data = df.copy()
    for column in ("started_at", "ended_at"):
        if column in data.columns and (pd.api.types.is_datetime64_any_dtype(data[column])):
            stamps = data[column]
            if stamps.dt.tz is None:
                stamps = stamps.dt.tz_localize("UTC")
            data[column] = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    if "outcome" in data.columns:
        label = {outcome: float(outcome in FAILED_OUTCOMES) for outcome in OUTCOMES}
        data[FAILED_COLUMN] = data["outcome"].map(label).astype(float)  # unknown or null outcome -> NaN
    else:
        data[FAILED_COLUMN] = float("nan")
    return data


def _plan(columns: set[str], names: Sequence[str], min_rows: int, min_failure_rate: float,
          max_failure_rate: float, now: float) -> list[tuple[str, str, Any]]:
    """(check name, expectation text, GX expectation) for the selected checks, in order."""
    import great_expectations as gx

    e = gx.expectations
    latest = now + FUTURE_SLACK_S
    planned: list[tuple[str, str, Any]] = []

    shared: dict[str, Any] = {}

    def add(group: str, text: str, expectation_class: type, **kwargs: Any) -> None:
        # A GX suite is set-like: it silently drops an expectation equal to one it holds (meta aside),
        # so two checks that need the same expectation share one object, and its result.
        identity = f"{expectation_class.__name__}{sorted(kwargs.items())!r}"
        if identity not in shared:
            shared[identity] = expectation_class(**kwargs, meta={META_KEY: _meta_key(group, text)})
        planned.append((group, text, shared[identity]))

    def require(group: str, column: str) -> bool:
        """True if ``column`` is there; else plan GX's column-exists expectation, which fails."""
        if column in columns:
            return True
        add(group, f"column {column} exists", e.ExpectColumnToExist, column=column)
        return False

    if NOT_NULL in names:
        for column in REQUIRED_COLUMNS:
            if require(NOT_NULL, column):
                add(NOT_NULL, f"{column} not null", e.ExpectColumnValuesToNotBeNull, column=column)
    if RANGES in names:
        if require(RANGES, "duration_s"):
            add(RANGES, "duration_s >= 0", e.ExpectColumnValuesToBeBetween, column="duration_s", min_value=0)
        for column in (c for c in NON_NEGATIVE_COLUMNS if c in columns):
            add(RANGES, f"{column} >= 0", e.ExpectColumnValuesToBeBetween, column=column, min_value=0)
        if "attempt" in columns:
            add(RANGES, "attempt >= 1", e.ExpectColumnValuesToBeBetween, column="attempt", min_value=1)
        if require(RANGES, "outcome"):
            add(RANGES, f"outcome in {{{', '.join(OUTCOMES)}}}", e.ExpectColumnValuesToBeInSet, column="outcome",
                value_set=list(OUTCOMES))
    if TIMESTAMP_ORDER in names:
        have_start, have_end = require(TIMESTAMP_ORDER, "started_at"), require(TIMESTAMP_ORDER, "ended_at")
        if have_start and have_end:
            add(TIMESTAMP_ORDER, "ended_at >= started_at", e.ExpectColumnPairValuesAToBeGreaterThanB,
                column_A="ended_at", column_B="started_at", or_equal=True)
        for column, present in (("started_at", have_start), ("ended_at", have_end)):
            if present:
                add(TIMESTAMP_ORDER, f"{column} in [2000-01-01, now + {FUTURE_SLACK_S:.0f} s]",
                    e.ExpectColumnValuesToBeBetween, column=column, min_value=EARLIEST_START, max_value=latest)
    if LABEL_RATE in names:
        add(LABEL_RATE, f"at least {min_rows} rows", e.ExpectTableRowCountToBeBetween, min_value=min_rows)
        require(LABEL_RATE, "outcome")
        add(LABEL_RATE, "both outcomes present (failed and succeeded attempts)",
            e.ExpectColumnDistinctValuesToContainSet, column=FAILED_COLUMN, value_set=[0.0, 1.0])
        add(LABEL_RATE, f"failure rate ({'|'.join(FAILED_OUTCOMES)}) in [{min_failure_rate}, {max_failure_rate}]",
            e.ExpectColumnMeanToBeBetween, column=FAILED_COLUMN, min_value=min_failure_rate,
            max_value=max_failure_rate)
    return planned


def _summarise(name: str, results: Sequence[tuple[str, Any]]) -> HistoryCheck:
    """Fold GX's results for one group into a HistoryCheck."""
    observed: dict[str, Any] = {}
    failing_rows = 0
    examples: list[dict[str, Any]] = []
    for text, r in results:
        entry: dict[str, Any] = {"success": bool(r.success)}
        for k in ("observed_value", "unexpected_count", "unexpected_percent", "missing_count", "partial_missing_list",
                  "partial_unexpected_list"):
            if k in r.result:
                entry[k] = _json_safe(r.result[k])
        error = _gx_error(r)
        if error:
            entry["error"] = error
        observed[text] = entry
        if not r.success:
            failing_rows += int(r.result.get("unexpected_count") or 0)
            for row in r.result.get("partial_unexpected_index_list") or []:
                if len(examples) < MAX_EXAMPLES:
                    example = row if isinstance(row, Mapping) else {"index": row}
                    examples.append({"expectation": text, **_json_safe(example)})
    return HistoryCheck(name=name, passed=all(r.success for _, r in results), description=CHECK_DESCRIPTIONS[name],
                        observed=observed, expectation="; ".join(text for text, _ in results),
                        failing_rows=failing_rows, examples=examples)


def _gx_error(result: Any) -> str | None:
    """The message of an exception GX caught while validating, if any (it nests them per metric)."""
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    messages = [v.get("exception_message") for v in info.values()
                if isinstance(v, Mapping) and v.get("raised_exception")]
    return "; ".join(str(m) for m in messages) or None


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, tuples as lists, NaN/inf and pandas NA as None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _batch_definition() -> Any:
    """The GX batch definition for whole DataFrames, on an ephemeral context built once per process.

    Call with ``_GX_LOCK`` held.
    """
    global _GX_BATCH_DEFINITION
    if _GX_BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        gx_logger = logging.getLogger("great_expectations")
        if gx_logger.level == logging.NOTSET:  # keep a level the user chose
            gx_logger.setLevel(logging.WARNING)
        config = DataContextConfig(  # GX's own ephemeral default adds a temporary docs site and logs it at INFO
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),  # tqdm on stderr otherwise
            analytics_enabled=False,
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        source = context.data_sources.add_pandas("predcheck")
        asset = source.add_dataframe_asset("step_history")
        _GX_BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole_history")
    return _GX_BATCH_DEFINITION
