"""A small stand-in for the ClearML API server and files server, for tests only.

No real ClearML server can run here (it needs Docker, MongoDB and Elasticsearch), so the
tracking tests point the real ClearML SDK at this: an HTTP server on 127.0.0.1 that
answers the endpoints the SDK calls during a run (found by recording them), records every
call, keeps the state a server would keep (projects, tasks, models, events, files) and
refuses what clearml-server refuses where it matters to us:

- ``tasks.create`` needs ``name``, a known ``type`` and an existing ``project``;
- a task's ``parent`` must be an existing task when it is set (create or edit);
- ``tasks.edit`` changes only a created task unless ``force`` is set;
- status changes follow the server's rules: ``started`` only from created/queued,
  ``completed`` only from in_progress/stopped, ``stopped``/``failed`` not from
  published/completed (``force`` lifts these, as on the server), and nothing edits a
  published task;
- one event per (task, kind, iteration, metric, variant): a later one overwrites it, as
  the server's event ids do;
- a model gets a ``uri`` before it is marked ready, and a model's ``task`` must exist;
- files reach the files host only by PUT or POST (multipart as the SDK sends them).

It is not a ClearML server: it keeps no users, queues, workers or permissions, searches
only by the fields the SDK uses, and answers unknown endpoints with an empty result
(recorded, so a test can see them).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from clearml_standin_api import API_VERSION, Endpoints, Refused


@dataclass
class State:
    """Everything the stand-in server holds; tests assert on it."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str, int, str, str], dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    deleted_tasks: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # --- what tests read -------------------------------------------------------------
    def endpoints(self) -> set[str]:
        return {name for name, _ in self.calls}

    def tasks_named(self, pattern: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if re.search(pattern, t["name"])]

    def task_events(self, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for k, e in self.events.items() if k[0] == task_id and kind in (None, k[1])]

    def plots(self, task_id: str, metric: str) -> list[dict[str, Any]]:
        return [e for e in self.task_events(task_id, "plot") if e.get("metric") == metric]

    def project_id(self, name: str) -> str | None:
        return next((p["id"] for p in self.projects.values() if p["name"] == name), None)



class StandIn(Endpoints):
    """API + files server on two 127.0.0.1 ports, run in threads."""

    def __init__(self) -> None:
        self.state = State()
        self._api = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "api"))
        self._files = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "files"))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in (self._api, self._files)]

    @property
    def api_host(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def files_host(self) -> str:
        return f"http://127.0.0.1:{self._files.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {"CLEARML_API_HOST": self.api_host, "CLEARML_WEB_HOST": self.api_host,
                "CLEARML_FILES_HOST": self.files_host,
                "CLEARML_API_ACCESS_KEY": "STANDINACCESSKEY0123456789",
                "CLEARML_API_SECRET_KEY": "standinsecret0123456789abcdefghijklmnop"}

    def __enter__(self) -> StandIn:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self._api, self._files):
            s.shutdown()
            s.server_close()

    def call(self, endpoint: str, body: Any) -> dict[str, Any]:
        with self.state.lock:
            self.state.calls.append((endpoint, body))
            service, _, action = endpoint.partition(".")
            handler = getattr(self, f"_{service}_{action}", None)
            if handler is None:
                return {}
            try:
                return handler(body if isinstance(body, dict) else {"_raw": body})
            except Refused as err:
                self.state.refused.append((endpoint, str(err)))
                raise

    # --- files -------------------------------------------------------------------------
    def store_file(self, path: str, content_type: str, body: bytes, method: str) -> None:
        path = _clean(path)
        with self.state.lock:
            self.state.calls.append((f"files.{method}", path))
            if content_type.startswith("multipart/form-data"):
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
                for part in msg.iter_parts():
                    name = part.get_param("filename", header="content-disposition")
                    self.state.files[_clean(f"{path}/{name}")] = part.get_payload(decode=True)
            else:
                self.state.files[path] = body

    def files_under(self, prefix: str = "") -> Iterator[str]:
        return (p for p in self.state.files if p.startswith(prefix))

    def file(self, url: str) -> bytes | None:
        """The content stored for a files-host URL (as a model or artifact uri holds it)."""
        if not url.startswith(self.files_host):
            return None
        return self.state.files.get(_clean(urlparse(url).path))


def _clean(path: str) -> str:
    """The SDK joins host and path with an extra slash: one file, one key."""
    return re.sub("/+", "/", path)


def _handler(standin: StandIn, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, code: int, payload: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _api(self) -> None:
            raw = self._body()
            endpoint = urlparse(self.path).path.rstrip("/").rsplit("/", 1)[-1]
            text = raw.decode("utf-8", "replace")
            try:
                body: Any = json.loads(text) if text.strip() else {}
            except ValueError:
                body = text  # events.add_batch: one JSON event a line
            code, subcode, msg, data = 200, 0, "OK", {}
            try:
                data = standin.call(endpoint, body)
            except Refused as err:
                code, subcode, msg = err.code, err.subcode, str(err)
            meta = {"id": uuid.uuid4().hex, "trx": uuid.uuid4().hex, "result_code": code,
                    "result_subcode": subcode, "result_msg": msg,
                    "endpoint": {"name": endpoint, "requested_version": API_VERSION,
                                 "actual_version": API_VERSION}}
            self._send(code, json.dumps({"meta": meta, "data": data}).encode())

        def _file_write(self) -> None:
            body = self._body()
            standin.store_file(urlparse(self.path).path, self.headers.get("Content-Type", ""),
                               body, self.command.lower())
            self._send(200, b"{}")

        def do_GET(self) -> None:
            if role == "api":
                self._api()
                return
            self._body()
            content = standin.state.files.get(_clean(urlparse(self.path).path))
            if content is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, content, "application/octet-stream")

        def do_POST(self) -> None:
            self._api() if role == "api" else self._file_write()

        def do_PUT(self) -> None:
            self._api() if role == "api" else self._file_write()

        def do_DELETE(self) -> None:
            self._body()
            if role == "files":
                standin.state.files.pop(urlparse(self.path).path, None)
            self._send(200, b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
