"""A scripted HTTP server on 127.0.0.1 for failure tests of the OpenAI-compatible path
(``transformers serve`` itself is started by empathy_utils.serving)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from empathy_utils.serving import free_port


class Scripted(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions from a script of (status, delay) steps, then succeeds, echoing
    the last message (so a test can check answers come back in order)."""

    script: list = []
    requests: list = []
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.lock:
            type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            step = type(self).script.pop(0) if type(self).script else (200, 0.0)
        status, delay = step
        time.sleep(delay)
        if status != 200:
            payload = json.dumps({"error": {"message": f"scripted {status}", "type": "server_error"}}).encode()
        else:
            payload = json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Echo: " + body["messages"][-1]["content"]}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            }).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up: expected
            pass


@contextmanager
def scripted_server(script: list[tuple[int, float]]):
    handler = type("Handler", (Scripted,), {"script": list(script), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()
