"""A real S3 protocol server (moto) on 127.0.0.1 for tests of ``s3://`` outputs."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "miner-test", "AWS_SECRET_ACCESS_KEY": "miner-test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def s3_server(bucket: str = "miner-test") -> Iterator[dict]:
    """Start moto's S3 server on a free loopback port with ``bucket`` created; yields the
    environment variables that point S3 clients (pyarrow, boto3) at it."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = dict(CREDENTIALS, AWS_ENDPOINT_URL=f"http://{host}:{port}")
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="miner-test", aws_secret_access_key="miner-test"
                     ).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()


@contextlib.contextmanager
def environment(env: dict) -> Iterator[None]:
    """Set ``env`` in this process (and forget cached filesystem clients) for a while."""
    import miner.storage

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    miner.storage._filesystems.clear()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        miner.storage._filesystems.clear()
