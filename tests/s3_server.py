"""A real S3 HTTP API on a free loopback port (``moto_server``), for tests and benchmarks.

Not an in-process mock: the store talks to it over HTTP through aioboto3,
exactly as it talks to AWS S3 or MinIO.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.processes import free_port


def aws_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables pointing a client at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on a free port; yield its endpoint URL; stop it."""
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        pytest.fail("moto_server is missing: pip install 'moto[server]'")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server at ``endpoint`` (boto3, synchronously: test setup only)."""
    import boto3

    env = aws_env(endpoint)
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)


def payload_bytes(history_json: str) -> list[bytes]:
    """Every payload's data (and failure text) in a history as ``temporal workflow show --output json`` prints it.

    Payload data is base64 there, so a plaintext check must look at the decoded bytes.
    """
    import base64
    import json

    found: list[bytes] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    try:
                        found.append(base64.b64decode(value, validate=True))
                    except ValueError:
                        found.append(value.encode())
                elif isinstance(value, str):
                    found.append(value.encode())
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(history_json))
    return found
