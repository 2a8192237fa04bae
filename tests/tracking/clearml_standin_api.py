"""The endpoints of the ClearML stand-in (see clearml_standin.py): the state they keep
and the server rules they enforce, one method per ``service.action``."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearml_standin import State

API_VERSION = "2.23"
TASK_TYPES = {"training", "testing", "inference", "data_processing", "application",
              "monitor", "controller", "optimizer", "service", "qc", "custom"}
EVENT_KIND = {"training_stats_scalar": "scalar", "plot": "plot", "training_debug_image":
              "image", "log": "log", "training_stats_vector": "vector"}



class Refused(Exception):
    def __init__(self, msg: str, code: int = 400, subcode: int = 0) -> None:
        super().__init__(msg)
        self.code, self.subcode = code, subcode



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



class Endpoints:
    """``_<service>_<action>(body) -> data``; raises :class:`Refused` as the server would."""

    state: State

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

