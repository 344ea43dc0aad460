"""``CheckpointIOManager``: op and asset outputs as checkpoints on any fsspec URL.

Outputs go to ``{root}/{job}/{run_id}/{step_key}/outputs/{output}/ckpt-NNNNNN/`` (assets to
``{root}/assets/{key...}[/{partition}]/ckpt-NNNNNN/``), with the same manifest, atomic commit,
sha256 check and retention as in-step checkpoints. Safe serializers only unless pickle is opted in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from pydantic import Field

from predcheck_dagster.errors import CheckpointNotFoundError
from predcheck_dagster.resource import STEP_IO_BYTES, default_checkpoint_root

if TYPE_CHECKING:  # loaded when an output is first handled: fsspec is not imported before
    from predcheck_dagster.checkpoint_store import CheckpointStore


class CheckpointIOManager(ConfigurableIOManager):
    """Stores outputs as verified checkpoints (local by default; memory://, s3://, gs:// by URL)."""

    root_url: str | None = Field(default=None, description="fsspec URL of the storage root. Default: "
                                 "$DAGSTER_HOME/predcheck/checkpoints.")
    storage_options: dict[str, str] = Field(
        default={}, description="fsspec storage options of root_url, e.g. {endpoint_url: ...}; "
        "credentials come from the environment, never from here.")
    retention: int = Field(default=3, description="Versions kept per output stream.")
    allow_pickle: bool = Field(default=False, description="Allow pickle for objects no safe serializer "
                               "(JSON, numpy, parquet) handles. Only if you trust the storage's writers.")

    def _store(self) -> CheckpointStore:
        from predcheck_dagster.checkpoint_store import CheckpointStore

        return CheckpointStore(self.root_url or default_checkpoint_root(), retention=self.retention,
                               allow_pickle=self.allow_pickle, storage_options=self.storage_options)

    @staticmethod
    def _stream(store: CheckpointStore, context: OutputContext) -> str:
        if context.has_asset_key:
            partition = context.partition_key if context.has_partition_key else None
            return store.asset_stream(list(context.asset_key.path), partition)
        return store.output_stream(context.job_name, context.run_id, context.step_key, context.name)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        store = self._store()
        run = context.step_context.dagster_run
        manifest = store.write(obj, stream=self._stream(store, context), job=context.job_name,
                               run_id=context.run_id, root_run_id=run.root_run_id or run.run_id,
                               step_key=context.step_key, kind="output")
        tally = STEP_IO_BYTES.setdefault((context.run_id, context.step_key), {"input": 0, "output": 0})
        tally["output"] += manifest.nbytes
        context.add_output_metadata({
            "path": MetadataValue.path(store.url_of(manifest.checkpoint_id)),
            "checkpoint_id": manifest.checkpoint_id, "nbytes": manifest.nbytes,
            "sha256": manifest.sha256, "serializer": manifest.serializer,
            "write_s": round(manifest.write_s, 6),
        })

    def load_input(self, context: InputContext) -> Any:
        upstream = context.upstream_output
        store = self._store()
        stream = self._stream(store, upstream)
        found = store.latest(stream)
        if found is None:
            raise CheckpointNotFoundError(
                f"no stored output at {stream!r} under {store.root_url!r} for input {context.name!r}: "
                "the upstream step did not run in this run group, or its storage was deleted; "
                "re-execute the upstream step.")
        manifest, obj = found
        step_key = context.step_context.step.key
        tally = STEP_IO_BYTES.setdefault((context.step_context.run_id, step_key), {"input": 0, "output": 0})
        tally["input"] += manifest.nbytes
        return obj
