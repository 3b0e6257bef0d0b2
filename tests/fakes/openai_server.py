"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, run in a thread.

Tests point litellm at `.base_url` and get real HTTP: latency, injected faults at given
rates (429, 500, timeout, garbage body, junk content, truncated JSON, 401), fixed error replies
that echo the request's Authorization header as real providers do (ErrorReply), a limited number
of slots (a local server that serves one request at a time queues the rest), and counters for
calls and the peak number of requests in flight, so concurrency limits and resume behaviour
can be proven.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "timeout", "garbage", "junk", "truncated", "401")
# What a confused model writes: a well-formed completion whose content is neither JSON nor prose.
JUNK = "not json {{{ ["


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error answered instead of a completion, shaped like OpenAI's error body.

    `message` may hold `{authorization}`: the request's Authorization header, echoed as a real
    401 ("Incorrect API key provided: Bearer sk-...") or a proxy's 500 does. `when(body)` picks
    the requests that get it (None: every request).
    """

    status: int
    message: str
    code: str | None = None
    when: Callable[[dict], bool] | None = None


class _Server(ThreadingHTTPServer):
    # socketserver listens with a queue of 5: a client opening 100 connections at once had
    # most of its SYNs dropped and retried them after 1-3 s, so the fake, not the client, set
    # the pace of a fan-out benchmark.
    request_queue_size = 1024


class FakeOpenAI:
    """`with FakeOpenAI(responder) as srv:` ... `srv.base_url`, `srv.calls`, `srv.max_in_flight`.

    responder(body) returns the assistant message content for a request body.
    faults maps a fault name from FAULTS to the probability of injecting it on a call.
    A "timeout" fault sleeps `timeout_sleep` seconds before answering (set it past the
    client's timeout); "garbage" answers with a body that is not a completion, "junk" with a
    completion whose content is JUNK. `slots` serves that many requests at a time (None: all);
    the others wait their turn, as at a single-slot local server, and a client that gave up
    on one does not free its place in the queue.
    """

    def __init__(
        self,
        responder: Callable[[dict], str],
        latency: float = 0.0,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        timeout_sleep: float = 2.0,
        error: ErrorReply | None = None,
        slots: int | None = None,
        usage_details: Callable[[dict], dict] | None = None,
    ):
        unknown = set(faults or {}) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        self.responder, self.latency = responder, latency
        self.faults = dict(faults or {})
        self.timeout_sleep = timeout_sleep
        self.error = error
        self.usage_details = usage_details  # usage_details(body): fields added to a reply's usage
        self._slots = threading.Semaphore(slots) if slots else None
        self.rng = random.Random(seed)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, names in lower case
        self.faults_injected: dict[str, int] = {}
        self.call_times: list[float] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeOpenAI as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # A reply goes out in two writes (headers, then body). With Nagle's algorithm the
            # body waited for the client's delayed ACK of the headers, ~40 ms on a kept-alive
            # connection; real servers turn it off, and a benchmark must not charge it to the client.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                fake._handle(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- request handling ---------------------------------------------------------------
    def _pick_fault(self) -> str | None:
        with self._lock:
            roll = self.rng.random()
        edge = 0.0
        for name in FAULTS:
            edge += self.faults.get(name, 0.0)
            if roll < edge:
                return name
        return None

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length)
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.call_times.append(time.monotonic())
        try:
            body = json.loads(raw or b"{}")
            with self._lock:
                self.requests.append(body)
                self.headers.append({name.lower(): value for name, value in req.headers.items()})
            if self._slots is not None:
                with self._slots:
                    self._serve(req, body)
            else:
                self._serve(req, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _serve(self, req: BaseHTTPRequestHandler, body: dict) -> None:
        if self.latency:
            time.sleep(self.latency)
        fault = self._pick_fault()
        if fault:
            with self._lock:
                self.faults_injected[fault] = self.faults_injected.get(fault, 0) + 1
        self._respond(req, body, fault)

    def _respond(self, req: BaseHTTPRequestHandler, body: dict, fault: str | None) -> None:
        error = self.error
        if error is not None and (error.when is None or error.when(body)):
            message = error.message.format(authorization=req.headers.get("Authorization", ""))
            kind = "invalid_request_error" if error.status < 500 else "server_error"
            return _send(req, error.status, {"error": {"message": message, "type": kind, "code": error.code}})
        if fault == "429":
            return _send(req, 429, {"error": {"message": "rate limited", "type": "rate_limit"}})
        if fault == "401":
            return _send(
                req,
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        if fault == "500":
            return _send(req, 500, {"error": {"message": "internal error", "type": "server"}})
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
        if fault == "garbage":
            return _send_raw(req, 200, b"<html>not json at all")
        content = JUNK if fault == "junk" else self.responder(body)
        if fault == "truncated":
            # a 200 whose assistant content is JSON cut in half, as when max_tokens is hit
            content = content[: max(1, len(content) // 2)]
        reply = completion(body, content)
        if self.usage_details is not None:
            reply["usage"].update(self.usage_details(body))
        return _send(req, 200, reply)


def completion(body: dict, content: str) -> dict:
    """An OpenAI chat.completion object with a rough usage count."""
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = len(content.split())
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _send(req: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    _send_raw(req, status, json.dumps(payload).encode("utf-8"))


def _send_raw(req: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    try:
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout fired); nothing to tell it


def last_user_message(body: dict) -> str:
    """The text of the last user message of a request (what most responders look at)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def main() -> None:
    """Serve in its own process (benchmarks): prints the base URL, stops when stdin closes."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="fake OpenAI chat-completions server")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reply", default="ok")
    args = parser.parse_args()
    with FakeOpenAI(lambda body: args.reply, latency=args.latency) as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()
        cpu = time.process_time()
        print(
            f"calls={srv.calls} max_in_flight={srv.max_in_flight} cpu_per_call_ms={cpu / max(srv.calls, 1) * 1000:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
