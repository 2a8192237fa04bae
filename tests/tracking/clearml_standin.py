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

import base64
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

API_VERSION = "2.23"
TASK_TYPES = {"training", "testing", "inference", "data_processing", "application",
              "monitor", "controller", "optimizer", "service", "qc", "custom"}
EVENT_KIND = {"training_stats_scalar": "scalar", "plot": "plot", "training_debug_image":
              "image", "log": "log", "training_stats_vector": "vector"}


class Refused(Exception):
    def __init__(self, msg: str, code: int = 400, subcode: int = 0) -> None:
        super().__init__(msg)
        self.code, self.subcode = code, subcode


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


def _token() -> str:
    """An unsigned JWT: the SDK only decodes it (api_version, server_version)."""
    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    claims = {"api_version": API_VERSION, "server_version": "standin", "env": "test",
              "identity": {"user": "standin-user", "company": "standin"}}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _matches(record: dict[str, Any], query: dict[str, Any]) -> bool:
    """The subset of get_all filtering the SDK uses: id, name (regex), project, parent,
    tags / system_tags (all listed, '-x' excludes), status, type."""
    if query.get("id"):
        ids = query["id"] if isinstance(query["id"], list) else [query["id"]]
        if record["id"] not in ids:
            return False
    if query.get("name") and not re.search(str(query["name"]), record.get("name", "")):
        return False
    for key in ("project", "parent", "status", "type", "task"):
        wanted = query.get(key)
        if wanted:
            wanted = wanted if isinstance(wanted, list) else [wanted]
            if record.get(key) not in wanted:
                return False
    for key in ("tags", "system_tags"):
        for tag in query.get(key) or []:
            if tag is None:
                continue
            if tag.startswith("-"):
                if tag[1:] in record.get(key, []):
                    return False
            elif tag.startswith("__$"):
                continue
            elif tag not in record.get(key, []):
                return False
    return True


class StandIn:
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

    # --- API ---------------------------------------------------------------------------
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

    def _auth_login(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"token": _token()}

    def _projects_get_all(self, body: dict[str, Any]) -> dict[str, Any]:
        found = [p for p in self.state.projects.values() if _matches(p, body)]
        return {"projects": found}

    def _projects_get_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        project = self.state.projects.get(str(body.get("project")))
        if project is None:
            raise Refused(f"projects.get_by_id: invalid project {body.get('project')!r}",
                          subcode=401)
        return {"project": project}

    def _projects_create(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("name"):
            raise Refused("projects.create: name is required")
        if self.state.project_id(body["name"]):
            raise Refused(f"project {body['name']!r} exists", subcode=701)
        pid = uuid.uuid4().hex
        self.state.projects[pid] = {"id": pid, "name": body["name"],
                                    "description": body.get("description", "")}
        return {"id": pid}

    def _task(self, task_id: Any, endpoint: str) -> dict[str, Any]:
        task = self.state.tasks.get(str(task_id))
        if task is None:
            raise Refused(f"{endpoint}: invalid task id {task_id!r}", subcode=101)
        return task

    def _check_parent(self, parent: Any, endpoint: str) -> None:
        if parent and parent not in self.state.tasks:
            raise Refused(f"{endpoint}: parent task {parent!r} not found", subcode=101)

    def _tasks_create(self, body: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in ("name", "type", "project") if not body.get(k)]
        if missing:
            raise Refused(f"tasks.create: missing {missing}", subcode=11)
        if body["type"] not in TASK_TYPES:
            raise Refused(f"tasks.create: unknown type {body['type']!r}", subcode=11)
        if body["project"] not in self.state.projects:
            raise Refused(f"tasks.create: invalid project {body['project']!r}", subcode=401)
        self._check_parent(body.get("parent"), "tasks.create")
        tid = uuid.uuid4().hex
        task = {"tags": [], "system_tags": [], "comment": "", "hyperparams": {},
                "configuration": {}, "models": {"input": [], "output": []},
                "execution": {}, "runtime": {}, "output": {}, "script": {},
                "status": "created", "status_reason": "", "status_message": "",
                **{k: v for k, v in body.items() if not k.startswith("_")}, "id": tid}
        self.state.tasks[tid] = task
        return {"id": tid}

    def _editable(self, body: dict[str, Any], endpoint: str) -> dict[str, Any]:
        task = self._task(body.get("task"), endpoint)
        if task["status"] == "published" and not body.get("force"):
            raise Refused(f"{endpoint}: task is published", subcode=110)
        return task

    def _tasks_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._editable(body, "tasks.edit")
        if task["status"] != "created" and not body.get("force"):
            raise Refused(f"tasks.edit: task is {task['status']} (only created edits)",
                          subcode=110)
        if "parent" in body:
            self._check_parent(body.get("parent"), "tasks.edit")
            if body.get("parent") == task["id"]:
                raise Refused("tasks.edit: a task cannot be its own parent")
        for key, value in body.items():
            if key not in ("task", "force", "_raw"):
                task[key] = value
        return {"updated": 1, "fields": {}}

    def _tasks_update(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._tasks_edit(body)

    def _tasks_add_or_update_artifacts(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._editable(body, "tasks.add_or_update_artifacts")
        artifacts = {a["key"]: a for a in task.setdefault("execution", {}).get("artifacts", [])}
        artifacts.update({a["key"]: a for a in body.get("artifacts", [])})
        task["execution"]["artifacts"] = list(artifacts.values())
        return {"updated": 1}

    def _tasks_edit_hyper_params(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._editable(body, "tasks.edit_hyper_params")
        params = task.setdefault("hyperparams", {})
        if body.get("replace_hyperparams") == "all":
            params.clear()
        for p in body.get("hyperparams", []):
            section = params.setdefault(p.get("section", "General"), {})
            section[p["name"]] = p
        return {"updated": 1}

    def _tasks_edit_configuration(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._editable(body, "tasks.edit_configuration")
        for item in body.get("configuration", []):
            task.setdefault("configuration", {})[item["name"]] = item
        return {"updated": 1}

    def _tasks_add_or_update_model(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._editable(body, "tasks.add_or_update_model")
        models = task.setdefault("models", {}).setdefault(body.get("type", "output"), [])
        models[:] = [m for m in models if m.get("name") != body.get("name")]
        models.append({"name": body.get("name"), "model": body.get("model")})
        return {"updated": 1}

    def _tasks_get_all(self, body: dict[str, Any]) -> dict[str, Any]:
        found = [t for t in self.state.tasks.values() if _matches(t, body)]
        if body.get("order_by") and "-last_update" in body["order_by"]:
            found = found[::-1]
        return {"tasks": found[: body.get("page_size") or None]}

    def _tasks_get_all_ex(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._tasks_get_all(body)

    def _tasks_get_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"task": self._task(body.get("task"), "tasks.get_by_id")}

    def _status(self, body: dict[str, Any], endpoint: str, new: str,
                allowed: set[str] | None, refused: set[str] = frozenset()) -> dict[str, Any]:
        task = self._editable(body, endpoint)
        old = task["status"]
        if not body.get("force") and ((allowed is not None and old not in allowed)
                                      or old in refused):
            raise Refused(f"{endpoint}: invalid status change {old} -> {new}", subcode=110)
        task["status"] = new
        if body.get("status_reason"):
            task["status_reason"] = body["status_reason"]
        if body.get("status_message"):
            task["status_message"] = body["status_message"]
        return {"updated": 1, "fields": {"status": new}}

    def _tasks_started(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._status(body, "tasks.started", "in_progress", {"created", "queued"})

    def _tasks_completed(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._status(body, "tasks.completed", "completed", {"in_progress", "stopped"})

    def _tasks_stopped(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._status(body, "tasks.stopped", "stopped", None, {"published", "completed"})

    def _tasks_failed(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._status(body, "tasks.failed", "failed", None, {"published", "completed"})

    def _tasks_reset(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._status(body, "tasks.reset", "created", None, {"published"})

    def _tasks_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._task(body.get("task"), "tasks.delete")
        if task["status"] == "published" and not body.get("force"):
            raise Refused("tasks.delete: task is published", subcode=110)
        del self.state.tasks[task["id"]]
        self.state.deleted_tasks.append(task["id"])
        for key in [k for k in self.state.events if k[0] == task["id"]]:
            del self.state.events[key]
        return {"deleted": True}

    def _tasks_ping(self, body: dict[str, Any]) -> dict[str, Any]:
        self._task(body.get("task"), "tasks.ping")
        return {}

    def _events_add_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("_raw", "")
        events = body.get("requests") or [json.loads(line) for line in str(raw).splitlines()
                                          if line.strip()]
        for event in events:
            event = event.get("event", event) if isinstance(event, dict) else event
            self._task(event.get("task"), "events.add_batch")
            kind = EVENT_KIND.get(event.get("type", ""), event.get("type", ""))
            key = (event["task"], kind, int(event.get("iter", 0)), str(event.get("metric", "")),
                   str(event.get("variant", "")))
            if kind == "log":  # the server keeps every console line
                key = (*key[:4], f"{key[4]}#{len(self.state.events)}")
            self.state.events[key] = event
        return {"added": len(events), "errors": 0}

    def _events_get_task_events(self, body: dict[str, Any]) -> dict[str, Any]:
        self._task(body.get("task"), "events.get_task_events")
        kind = EVENT_KIND.get(body.get("event_type") or "", body.get("event_type"))
        found = [] if body.get("scroll_id") else self.state.task_events(body["task"], kind)
        return {"events": found, "returned": len(found), "total": len(found),
                "scroll_id": "end"}

    def _events_get_task_plots(self, body: dict[str, Any]) -> dict[str, Any]:
        self._task(body.get("task"), "events.get_task_plots")
        found = [] if body.get("scroll_id") else self.state.task_events(body["task"], "plot")
        return {"plots": found, "returned": len(found), "total": len(found),
                "scroll_id": "end"}

    def _model(self, model_id: Any, endpoint: str) -> dict[str, Any]:
        model = self.state.models.get(str(model_id))
        if model is None:
            raise Refused(f"{endpoint}: invalid model id {model_id!r}", subcode=201)
        return model

    def _model_fields(self, model: dict[str, Any], body: dict[str, Any], endpoint: str) -> None:
        for key, value in body.items():
            if key not in ("model", "_raw", "override_model_id"):
                model[key] = value
        if model.get("task"):
            self._task(model["task"], endpoint)
        if model.get("ready") and not model.get("uri"):
            raise Refused(f"{endpoint}: a ready model needs a uri", subcode=11)

    def _models_create(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("name"):
            raise Refused("models.create: name is required", subcode=11)
        mid = uuid.uuid4().hex
        model = {"id": mid, "tags": [], "system_tags": [], "ready": False}
        self._model_fields(model, body, "models.create")
        self.state.models[mid] = model
        return {"id": mid, "created": True}

    def _models_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._model(body.get("model"), "models.edit")
        self._model_fields(model, body, "models.edit")
        return {"updated": 1}

    def _models_update(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._models_edit(body)

    def _models_update_for_task(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._task(body.get("task"), "models.update_for_task")
        mid = body.get("override_model_id") or uuid.uuid4().hex
        model = self.state.models.setdefault(mid, {"id": mid, "tags": [], "system_tags": [],
                                                   "name": task["name"]})
        self._model_fields(model, {**body, "ready": True}, "models.update_for_task")
        return {"id": mid, "created": True, "updated": 1}

    def _models_set_ready(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._model(body.get("model"), "models.set_ready")
        if not model.get("uri"):
            raise Refused("models.set_ready: a model needs a uri", subcode=11)
        model["ready"] = True
        return {"updated": 1}

    def _models_get_all(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"models": [m for m in self.state.models.values() if _matches(m, body)]}

    def _models_get_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"model": self._model(body.get("model"), "models.get_by_id")}

    def _models_add_or_update_metadata(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._model(body.get("model"), "models.add_or_update_metadata")
        meta = {m["key"]: m for m in model.get("metadata", [])}
        meta.update({m["key"]: m for m in body.get("metadata", [])})
        model["metadata"] = list(meta.values())
        return {"updated": 1}

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
