"""``xray-hpo clearml-upload [FOLDER]``: send a run's offline ClearML sessions to a server.

Order matters: an imported child keeps pointing at its parent's dead ``offline-...`` id, so
parents go first, and every offline id already uploaded is replaced by its server id in a
session before import (parent, tags such as ``optimizer:<id>``, configuration entries,
table links). The upload never half-fails:

- a parent that cannot be resolved (not in the folder and not on the server) is dropped,
  recorded as a ``parent-missing:<id>`` tag, with a warning;
- a failed import deletes the draft it left (found by a one-off ``upload:<uuid>`` tag),
  and so does a continuation, for which the SDK creates a task it then leaves empty;
- each uploaded zip gets a ``<zip>.uploaded`` marker (the new id, then ``finished`` once
  its status and model are set), so a rerun skips it and never creates a second task;
- after import a failed trial is failed again and a pruned or interrupted one stopped
  (the import marks every task completed); train_best's model artifact is registered as
  an output model with its weights on the files server;
- an optimizer session continuing an earlier one (a resumed study) is appended to the
  same server task; its tables are re-sent once its trials have server ids.

What upload cannot keep: start and end times (the server stamps the upload time) and
the console output order across tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xray_hpo.tracking.settings import DEFAULT_BASE_DIR, ENV_GENERATED, mask
from xray_hpo.tracking.upload_server import ClearMLServer, Server

MARKER_SUFFIX = ".uploaded"
FINISHED = "finished"
UPLOAD_TAG = "upload:"
CONTINUES_TAG = "continues:"  # = trackers.CONTINUES_TAG (upload imports no clearml-side code)
PARENT_MISSING_TAG = "parent-missing:"
OPTIMIZER_TAG = "optimizer:"  # = runs.OPTIMIZER_TAG: train_best / evaluate -> optimizer
FINAL_STATES = ("failed", "pruned", "interrupted")


class UploadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Session:
    zip_path: Path
    task_id: str
    parent: str | None
    task_type: str
    name: str
    tags: tuple[str, ...] = ()

    @property
    def marker(self) -> Path:
        return self.zip_path.with_name(self.zip_path.name + MARKER_SUFFIX)

    @property
    def continues(self) -> str | None:
        return next((t[len(CONTINUES_TAG):] for t in self.tags if t.startswith(CONTINUES_TAG)),
                    None)

    @property
    def refs(self) -> tuple[str, ...]:
        """The tasks this one points at (parent, continued optimizer, linked optimizer):
        uploaded first, so their server ids replace the offline ones here."""
        linked = [t[len(OPTIMIZER_TAG):] for t in self.tags if t.startswith(OPTIMIZER_TAG)]
        return tuple(r for r in (self.parent, self.continues, *linked) if r)

    @property
    def state(self) -> str | None:
        return next((t for t in self.tags if t in FINAL_STATES), None)


def find_sessions(folder: Path) -> list[Session]:
    """Every offline session zip under ``folder`` (any depth)."""
    sessions = []
    for zip_path in sorted(folder.rglob("offline-*.zip")):
        with zipfile.ZipFile(zip_path) as zf:
            data = json.loads(zf.read("task.json"))
        sessions.append(Session(zip_path, str(data["id"]), data.get("parent") or None,
                                str(data.get("type", "")), str(data.get("name", "")),
                                tuple(data.get("tags") or ())))
    return sessions


def upload_order(sessions: list[Session]) -> list[Session]:
    """Every task before the sessions that point at it (:attr:`Session.refs`), any depth;
    otherwise optimizers first, then by name."""
    by_id = {s.task_id: s for s in sessions}

    def depth(s: Session, seen: frozenset[str] = frozenset()) -> int:
        ups = [by_id[r] for r in s.refs if r in by_id and r not in seen]
        return max((1 + depth(u, seen | {s.task_id}) for u in ups), default=0)

    return sorted(sessions, key=lambda s: (depth(s), s.task_type != "optimizer", s.name))


def _read_marker(s: Session) -> tuple[str, bool] | None:
    if not s.marker.is_file():
        return None
    lines = s.marker.read_text(encoding="utf-8").split()
    return (lines[0], FINISHED in lines[1:]) if lines else None


def _substitute(text: str, new_ids: dict[str, str]) -> str:
    for old, new in new_ids.items():
        text = text.replace(old, new)
    return text


def upload_sessions(folder: Path, server: Server | None = None, *,
                    echo: Callable[[str], None] = print) -> dict[str, str]:
    """Upload every session under ``folder`` not uploaded yet; returns offline id -> new id."""
    server = server or ClearMLServer()
    sessions = upload_order(find_sessions(folder))
    new_ids: dict[str, str] = {}
    unfinished: list[Session] = []
    for s in sessions:  # earlier uploads (markers) count for re-linking
        marker = _read_marker(s)
        if marker:
            new_ids[s.task_id] = marker[0]
            if not marker[1]:
                unfinished.append(s)
    for s in sessions:
        if s.task_id in new_ids and s not in unfinished:
            continue
        with tempfile.TemporaryDirectory(prefix="xray-hpo-upload-") as tmp:
            session_dir = Path(tmp) / s.task_id
            with zipfile.ZipFile(s.zip_path) as zf:
                zf.extractall(session_dir)
            if s.task_id not in new_ids:
                new_ids[s.task_id] = _import(s, session_dir, new_ids, server, echo)
                s.marker.write_text(f"{new_ids[s.task_id]}\n", encoding="utf-8")
            data = json.loads((session_dir / "task.json").read_text(encoding="utf-8"))
            server.finish(new_ids[s.task_id], state=s.state,
                          remove_tags=[t for t in data.get("tags", [])
                                       if t.startswith(UPLOAD_TAG)],
                          model=_offline_model(data, session_dir))
        s.marker.write_text(f"{new_ids[s.task_id]}\n{FINISHED}\n", encoding="utf-8")
        echo(f"uploaded {s.task_type} task {s.name!r}: {s.task_id} -> {new_ids[s.task_id]}")
    for s in sessions:  # the optimizer's tables link trials that only now have server ids
        if s.task_type == "optimizer":
            _resend_links(s, new_ids, server)
    return new_ids


def _import(s: Session, session_dir: Path, new_ids: dict[str, str], server: Server,
            echo: Callable[[str], None]) -> str:
    task_json = session_dir / "task.json"
    original = json.loads(task_json.read_text(encoding="utf-8"))
    data: dict[str, Any] = json.loads(_substitute(json.dumps(original), new_ids))
    parent = data.get("parent")
    if parent and (parent.startswith("offline-") or not server.task_exists(parent)):
        echo(f"warning: parent {parent} of {s.name!r} is neither in this folder nor on the "
             "server; uploading it without a parent (tagged parent-missing)")
        data["parent"] = None
        data["tags"] = [*data.get("tags", []), PARENT_MISSING_TAG + parent]
    previous = new_ids.get(s.continues or "")
    draft_tag = f"{UPLOAD_TAG}{uuid.uuid4().hex[:12]}"
    data["tags"] = [*data.get("tags", []), draft_tag]
    task_json.write_text(json.dumps(data), encoding="utf-8")
    metrics = session_dir / "metrics.jsonl"
    if metrics.is_file():
        metrics.write_text(_substitute(metrics.read_text(encoding="utf-8"), new_ids),
                           encoding="utf-8")
    try:
        new_id = server.import_session(str(session_dir), previous)
        if not new_id:
            raise UploadError("the import returned no task id")
    except Exception as err:
        removed = server.delete_tagged(draft_tag, keep=previous)
        raise UploadError(f"upload of {s.zip_path} failed ({mask(str(err))}); "
                          f"{removed} draft task(s) it left were deleted") from err
    if previous is not None:
        # Appending to a task, the SDK still creates a task of its own first and leaves
        # it behind: one optimizer task per study means deleting it.
        server.delete_tagged(draft_tag, keep=previous, with_files=False)
    return str(new_id)


def _offline_model(data: dict[str, Any], session_dir: Path) -> dict[str, Any] | None:
    """train_best's model entry and its artifact file in the extracted session."""
    from xray_hpo.tracking.runs import MODEL_ENTRY

    entry = (data.get("configuration") or {}).get(MODEL_ENTRY)
    if not entry:
        return None
    value = entry.get("value") if isinstance(entry, dict) else entry
    spec = _parse_configuration(value)
    offline_folder = str(data.get("offline_folder", ""))
    for artifact in (data.get("execution") or {}).get("artifacts") or []:
        if artifact.get("key") == spec.get("artifact"):
            local = str(artifact.get("uri", "")).replace(os.path.join(offline_folder, "data/"),
                                                         "", 1)
            path = session_dir / "data" / local
            if path.is_file():
                return {**spec, "weights": str(path)}
    return None


def _parse_configuration(value: Any) -> dict[str, Any]:
    """A configuration entry as the SDK stores a dict: HOCON text (JSON is HOCON too)."""
    if not isinstance(value, str):
        return dict(value or {})
    from clearml.utilities.pyhocon import ConfigFactory

    return dict(ConfigFactory.parse_string(value).as_plain_ordered_dict())


def _resend_links(s: Session, new_ids: dict[str, str], server: Server) -> None:
    with zipfile.ZipFile(s.zip_path) as zf:
        if "metrics.jsonl" not in zf.namelist():
            return
        lines = zf.read("metrics.jsonl").decode("utf-8").splitlines()
    mapped = {k: v for k, v in new_ids.items() if k != s.task_id}
    plots = []
    for line in lines:
        for event in json.loads(line) if line.strip() else []:
            text = event.get("plot_str") or ""
            if event.get("type") == "plot" and any(k in text for k in mapped):
                plots.append({**event, "plot_str": _substitute(text, mapped)})
    if plots:
        server.send_events(new_ids[s.task_id], plots)


def default_folder() -> Path:
    return DEFAULT_BASE_DIR


def _run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"clearml-upload: no such folder {folder}", file=sys.stderr)
        return 2
    # Use the user's own configuration (credentials), never a run's generated offline one.
    for key in ("CLEARML_OFFLINE_MODE", "TRAINS_OFFLINE_MODE", "CLEARML_CACHE_DIR"):
        os.environ.pop(key, None)
    if os.environ.get("CLEARML_CONFIG_FILE") == os.environ.get(ENV_GENERATED):
        os.environ.pop("CLEARML_CONFIG_FILE", None)
    from xray_hpo.tracking.settings import credentials_configured

    if not credentials_configured(os.environ):
        print(
            "clearml-upload: no ClearML credentials configured (run `clearml-init` or set "
            "CLEARML_API_HOST, CLEARML_API_ACCESS_KEY, CLEARML_API_SECRET_KEY)",
            file=sys.stderr,
        )
        return 2
    if not find_sessions(folder):
        print(f"clearml-upload: no offline sessions under {folder}", file=sys.stderr)
        return 1
    try:
        uploaded = upload_sessions(folder)
    except Exception as err:
        print(f"clearml-upload failed: {mask(str(err))}", file=sys.stderr)
        return 1
    print(f"clearml-upload: {len(uploaded)} task(s) on the server")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``clearml-upload`` on the ``xray-hpo`` argument parser's subparsers."""
    parser = subparsers.add_parser(
        "clearml-upload",
        help="upload a run's offline ClearML sessions (optimizer first, trials re-linked)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "folder",
        nargs="?",
        default=str(default_folder()),
        help=f"run folder or a folder of runs (default: {default_folder()})",
    )
    parser.set_defaults(func=_run)
