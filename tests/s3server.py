"""A real S3 API on this machine, for tests and benchmarks: moto's server in a process of
its own (so that GDAL's and obstore's requests never wait on the GIL of the process that
makes them), and the AWS environment that reaches it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 API on a free port of 127.0.0.1, serving once it prints the address it
    listens on; its endpoint URL."""
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    try:
        for line in server.stderr:
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                break
        else:
            raise RuntimeError(f"moto's server did not start (exit code {server.wait()})")
        # It logs every request to a pipe nobody reads: drain it, so it never blocks.
        threading.Thread(target=server.stderr.read, daemon=True).start()
        yield found[1]
    finally:
        server.terminate()
        server.wait()


def aws_env(endpoint: str) -> dict[str, str]:
    """This process's environment with the standard AWS variables for ``endpoint`` only, as
    a user's process reaches its bucket: fake keys, and no profile, config files or
    instance metadata to fall back on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CPL_AWS"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                "CPL_AWS_CREDENTIALS_FILE": "/nonexistent/aws-credentials"})
    return env
