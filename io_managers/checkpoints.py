"""Checkpoint storage of this code location: local by default, any fsspec URL by env var."""

import os

import predcheck_dagster as pc

checkpoint_io_manager = pc.CheckpointIOManager(root_url=os.environ.get("PREDCHECK_CHECKPOINT_ROOT"))
