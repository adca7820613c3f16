"""A scriptable OpenAI-compatible HTTP server for tests: the real openai client talks to it.

Serves `POST .../chat/completions` (any prefix, so the Azure deployment paths work too) and
`GET .../models` on 127.0.0.1 with a free port, from a stdlib ThreadingHTTPServer in a
background thread, so it never blocks the test's event loop. Tests queue behaviours
(a reply, an HTTP status, a hang, a garbage body) that are consumed one per request, and
read back every request body the server received (e.g. to assert no secret ever left).

Used by tests/conftest.py (the `fake_llm` fixture) and the LLM, pipeline and operator tests.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

Kind = Literal["reply", "status", "hang", "garbage"]


@dataclass(frozen=True)
class Behaviour:
    """What the server does for one request."""

    kind: Kind
    content: str = ""  # reply: the assistant message content
    prompt_tokens: int = 0
    completion_tokens: int = 0
    code: int = 200  # status
    body: bytes = b""  # status, garbage: the raw response body
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # hang


def reply(content: str | dict[str, Any], prompt_tokens: int = 100, completion_tokens: int = 50) -> Behaviour:
    """A 200 chat completion whose message content is `content` (a dict is sent as JSON text)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Behaviour("reply", content=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def status(
    code: int, body: dict[str, Any] | str | None = None, headers: dict[str, str] | None = None
) -> Behaviour:
    """An HTTP error (or any status) with an OpenAI-style error body unless one is given."""
    if body is None:
        body = {
            "error": {"message": f"fake status {code}", "type": "fake_error", "param": None, "code": None}
        }
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return Behaviour("status", code=code, body=raw, headers=dict(headers or {}))


def chat_completion(
    message: dict[str, Any],
    finish_reason: str = "stop",
    *,
    completion_id: str = "x",
    model: str = "m",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An OpenAI chat.completion body with one choice; pass it to `status(200, ...)` to send it as is."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def hang(seconds: float) -> Behaviour:
    """Sleep before answering, then answer with the server's default behaviour."""
    return Behaviour("hang", seconds=seconds)


def garbage(raw: bytes) -> Behaviour:
    """An HTTP 200 whose body is not JSON at all."""
    return Behaviour("garbage", body=raw)


def answer_for(
    category: str,
    action: str = "create_alert",
    parameters: dict[str, Any] | None = None,
    confidence: float = 0.8,
) -> dict[str, Any]:
    """A schema-valid answer dict (the JSON a well-behaved model would return)."""
    if parameters is None:
        parameters = (
            {"severity": "warning", "summary": f"{category} suspected"} if action == "create_alert" else {}
        )
    return {
        "category": category,
        "summary": f"fake diagnosis: {category}",
        "reasoning": f"the fake model says {category}",
        "action": {"name": action, "parameters": parameters},
        "confidence": confidence,
    }


class FakeLLM:
    """The server. Start it (or use it as a context manager), point base_url at it, script it."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []  # request paths (with query), in order
        self.headers: list[dict[str, str]] = []  # request headers, in order
        self.default: Behaviour = reply(answer_for("unknown", "none", {}, 0.3))
        # Optional: choose a behaviour from the request body (None: the queue, then the default).
        self.responder: Callable[[dict[str, Any]], Behaviour | None] | None = None
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- scripting -------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._queue.extend(behaviours)

    def all_text(self) -> str:
        """Every message content received, concatenated (for canary asserts)."""
        parts: list[str] = []
        with self._lock:
            bodies = list(self.requests)
        for body in bodies:
            if "_raw" in body:
                parts.append(str(body["_raw"]))
            for message in body.get("messages") or []:
                content = message.get("content") if isinstance(message, dict) else message
                if isinstance(content, list):
                    parts.extend(str(p.get("text", p)) if isinstance(p, dict) else str(p) for p in content)
                elif content is not None:
                    parts.append(str(content))
        return "\n".join(parts)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeLLM:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes up hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------
    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            self.headers.append(headers)

    def _next(self, body: dict[str, Any] | None = None) -> Behaviour:
        responder = self.responder
        if responder is not None and body is not None:
            chosen = responder(body)
            if chosen is not None:
                return chosen
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _completion(self, behaviour: Behaviour, model: str) -> bytes:
        with self._lock:
            self._counter += 1
            n = self._counter
        return json.dumps(
            chat_completion(
                {"role": "assistant", "content": behaviour.content},
                completion_id=f"chatcmpl-fake-{n}",
                model=model or self.model,
                usage={
                    "prompt_tokens": behaviour.prompt_tokens,
                    "completion_tokens": behaviour.completion_tokens,
                    "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                },
            )
        ).encode()


def _make_handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint
        timeout = 10  # idle keep-alive connections are dropped after this

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _send(self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test): nothing to answer

        def do_GET(self) -> None:
            if self.path.split("?")[0].endswith("/models"):
                body = {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]}
                self._send(200, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b'{"error": {"message": "not found"}}', "application/json")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self.path.split("?")[0].endswith("/chat/completions"):
                self._send(404, b'{"error": {"message": "not found"}}', "application/json")
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    body = {"_raw": raw.decode("utf-8", "replace")}
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            fake._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            behaviour = fake._next(body)
            if behaviour.kind == "hang":
                if fake._stopping.wait(behaviour.seconds):
                    return  # server stopping: drop the request
                behaviour = fake.default
            model = str(body.get("model") or "")
            if behaviour.kind == "reply":
                self._send(200, fake._completion(behaviour, model), "application/json")
            elif behaviour.kind == "status":
                self._send(behaviour.code, behaviour.body, "application/json", behaviour.headers)
            elif behaviour.kind == "garbage":
                self._send(200, behaviour.body, "text/plain")
            else:  # a hang whose default is a hang: answer it with an error, not a loop
                self._send(500, b'{"error": {"message": "fake: hang as default"}}', "application/json")

    return Handler
