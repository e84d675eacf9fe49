"""Start and stop a local OpenAI-compatible server (``transformers serve``) for a model spec.

Used by the tests (the API path is tested against a real server on 127.0.0.1) and by the teacher
benchmark; users can use it to serve the embedded model to another program:

    with local_server("embedded:smollm2-135m-instruct") as (base_url, model_name):
        ...  # teacher.backend: openai, teacher.base_url: base_url, teacher.model: model_name
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from .errors import BackendError
from .models import resolve_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(spec: str, log_path: str | Path | None = None, continuous_batching: bool = False,
                 timeout: float = 180.0):
    """Serve ``spec`` on 127.0.0.1; yields (base_url, model name to request); stops it on exit."""
    folder = resolve_model_path(spec)
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    cmd = [str(exe), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--log-level", "info"]
    if continuous_batching:
        cmd.append("--continuous-batching")
    log_path = Path(log_path) if log_path else Path(os.devnull)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise BackendError(f"transformers serve exited early (exit {proc.returncode}); see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise BackendError(f"transformers serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def count_completions(log_path: str | Path) -> int:
    """Chat-completion requests a server started with ``log_path`` answered (from its access log)."""
    return sum("POST /v1/chat/completions" in line and " 200" in line
               for line in Path(log_path).read_text().splitlines())
