"""Checkpoints and outputs on ``s3://`` against a local S3-compatible server (moto's server)."""

import socket

import pytest
from dagster import Definitions, OpExecutionContext, Out, job, op

import predcheck_dagster as pc
from predcheck_dagster.errors import CheckpointCorruptError


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="predcheck")
    yield url
    server.stop()


def _keys(endpoint: str, prefix: str) -> set[str]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="predcheck", Prefix=prefix)
    return {o["Key"] for o in listing.get("Contents", [])}


def test_store_round_trip_retention_and_tamper_detection_on_s3(s3_endpoint: str) -> None:
    import numpy as np

    store = pc.CheckpointStore("s3://predcheck/ckpt", retention=2, storage_options={"endpoint_url": s3_endpoint})
    stream = store.step_stream("etl", "root1", "load")
    for i in range(3):
        store.write(np.arange(10) * i, stream=stream, job="etl", run_id="root1", root_run_id="root1",
                    step_key="load", kind="periodic")
    assert _keys(s3_endpoint, "ckpt/") == {f"ckpt/etl/root1/load/ckpt-00000{i}/{name}" for i in (2, 3)
                                  for name in ("payload.npy", "manifest.json")}
    manifest, array = store.latest(stream)
    assert manifest.seq == 3 and array.tolist() == (np.arange(10) * 2).tolist()

    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket="predcheck", Key="ckpt/etl/root1/load/ckpt-000003/payload.npy", Body=b"tampered")
    with pytest.raises(CheckpointCorruptError, match=r"'etl/root1/load/ckpt-000003' payload fails its sha256"):
        store.read("etl/root1/load/ckpt-000003")
    manifest, array = store.latest(stream)  # falls back to the previous good checkpoint
    assert manifest.seq == 2 and array.tolist() == (np.arange(10) * 1).tolist()


@op(out=Out(io_manager_key="predcheck_io_manager"))
def produce(context: OpExecutionContext, predcheck: pc.PredcheckResource) -> dict:
    ck = predcheck.checkpointer(context)
    ck.checkpoint({"half": True})
    return {"rows": 3}


@op(out=Out(io_manager_key="predcheck_io_manager"))
def consume(value: dict) -> dict:
    return {"rows": value["rows"] * 2}


@job
def s3_job():
    consume(produce())


def test_job_writes_checkpoints_and_outputs_to_s3(s3_endpoint: str, instance) -> None:
    options = {"endpoint_url": s3_endpoint}
    defs = pc.instrument(
        Definitions(jobs=[s3_job]), sensors=False,
        predcheck=pc.PredcheckResource(checkpoint_root="s3://predcheck/runs", storage_options=options),
        io_manager=pc.CheckpointIOManager(root_url="s3://predcheck/runs", storage_options=options))
    result = defs.get_job_def("s3_job").execute_in_process(instance=instance)
    assert result.success and result.output_for_node("consume") == {"rows": 6}
    run = result.run_id
    assert _keys(s3_endpoint, "runs/") == {
        f"runs/s3_job/{run}/produce/ckpt-000001/payload.json", f"runs/s3_job/{run}/produce/ckpt-000001/manifest.json",
        *(f"runs/s3_job/{run}/{step}/outputs/result/ckpt-000001/{name}"
          for step in ("produce", "consume") for name in ("payload.json", "manifest.json")),
    }
