"""Real HTTP servers on 127.0.0.1 for the API path: llama.cpp's own OpenAI-compatible server (xllamacpp)
serving a local GGUF, and a fault-injecting proxy in front of it. Used by tests and benchmarks/faults.py.
Both are bounded: the model server lives inside a `with` block; the proxy also stops itself after
`max_requests` requests or `max_seconds`, whichever comes first."""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_KEY = "qwen2.5-coder-0.5b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaHTTPServer:
    """xllamacpp.Server on 127.0.0.1:PORT serving Qwen2.5-Coder-0.5B, stopped on exit of the block."""

    def __init__(self, slots: int = 4, n_ctx_per_slot: int = 2048, threads: int = 2):
        self.slots, self.n_ctx, self.threads = slots, n_ctx_per_slot * slots, threads
        self.port = free_port()
        self.server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LlamaHTTPServer":
        import xllamacpp

        from pipelines.local import LOCAL_MODELS, _route_native_stderr_to_log, ensure_model_file

        params = xllamacpp.CommonParams()
        params.model.path = str(ensure_model_file(LOCAL_MODELS[MODEL_KEY]))
        params.port = self.port
        params.hostnames = ["127.0.0.1"]
        params.n_ctx = self.n_ctx
        params.n_parallel = self.slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        _route_native_stderr_to_log()  # llama.cpp's log goes where the in-process tiers' goes
        self.server = xllamacpp.Server(params)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"llama.cpp server on port {self.port} did not become healthy")

    def __exit__(self, *exc) -> None:
        self.server = None  # xllamacpp stops its HTTP loop and frees the model when the object goes
        import gc

        gc.collect()


FAULTS = ("429", "500", "503", "timeout", "reset", "truncated", "malformed", "empty")


class FaultProxy:
    """Forwards POSTs to an upstream OpenAI-compatible server, injecting faults at `rate` (seeded).

    Faults: 429 with Retry-After, 500, 503, a stall longer than the client's timeout, a connection
    reset, a body cut in half (after the upstream generated it: the provider billed it), malformed
    JSON, and a torn answer (no content, no tokens, no finish reason). `fault_for` may instead name
    the fault per request (for tests that need a fixed sequence)."""

    def __init__(self, upstream_port: int, rate: float = 0.0, seed: int = 0, faults=FAULTS,
                 retry_after_s: float = 1.0, stall_s: float = 3.0, max_requests: int = 5000,
                 max_seconds: float = 1800.0, fault_for=None):
        self.upstream_port, self.rate, self.faults = upstream_port, rate, tuple(faults)
        self.retry_after_s, self.stall_s = retry_after_s, stall_s
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.fault_for = fault_for
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.injected: Counter = Counter()
        self.upstream_answers: Counter = Counter()  # request body hash -> answers the upstream generated
        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(max_seconds, self.close)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _choose(self) -> str | None:
        with self.lock:
            self.requests += 1
            n = self.requests
            if n > self.max_requests:
                threading.Thread(target=self.close, daemon=True).start()
                return "reset"
            if self.fault_for is not None:
                fault = self.fault_for(n)
            else:
                fault = self.rng.choice(self.faults) if self.rng.random() < self.rate else None
            if fault:
                self.injected[fault] += 1
            return fault

    def _forward(self, path: str, body: bytes, headers) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=600)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status == 200:
                with self.lock:
                    self.upstream_answers[hashlib.sha256(body).hexdigest()] += 1
            return response.status, data, response.getheader("Content-Type", "application/json")
        finally:
            conn.close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, extra: dict | None = None, length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _reset(self):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def do_GET(self):
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                    conn.request("GET", self.path)
                    r = conn.getresponse()
                    self._send(r.status, r.read())
                except OSError:
                    self._send(502, b'{"error": "upstream unreachable"}')

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._choose()
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                                      {"Retry-After": f"{proxy.retry_after_s:g}"})
                if fault in ("500", "503"):
                    return self._send(int(fault), b'{"error": {"message": "upstream trouble"}}')
                if fault == "timeout":
                    time.sleep(proxy.stall_s)
                    return self._reset()
                if fault == "reset":
                    return self._reset()
                if fault == "malformed":
                    return self._send(200, b'{"choices": [{"message": {"content": "A1')
                status, data, _ = proxy._forward(self.path, body, self.headers)
                if fault == "truncated" and status == 200:
                    self._send(200, data[: len(data) // 2], length=len(data))
                    return self._reset()
                if fault == "empty" and status == 200:  # a torn answer: nothing in it, not even why it ended
                    answer = json.loads(data)
                    answer["choices"][0]["message"]["content"] = None
                    answer["choices"][0]["finish_reason"] = None
                    answer["choices"][0].pop("logprobs", None)
                    answer["usage"]["completion_tokens"] = 0
                    data = json.dumps(answer).encode()
                self._send(status, data)

        return Handler
