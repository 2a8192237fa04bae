"""``xray-hpo clearml-upload [FOLDER]``: send a run's offline ClearML sessions to a server.

Order matters: an imported child keeps pointing at its parent's dead ``offline-...`` id, so
parents go first and each child's ``task.json`` is re-linked to the uploaded parent's real
id before import. Each uploaded zip gets a ``<zip>.uploaded`` marker holding the new id, so
a rerun skips it and still re-links children of an optimizer uploaded earlier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xray_hpo.tracking.settings import DEFAULT_BASE_DIR, ENV_GENERATED, mask

MARKER_SUFFIX = ".uploaded"
Importer = Callable[[str], str | None]


@dataclass(frozen=True)
class Session:
    zip_path: Path
    task_id: str
    parent: str | None
    task_type: str
    name: str

    @property
    def marker(self) -> Path:
        return self.zip_path.with_name(self.zip_path.name + MARKER_SUFFIX)


def find_sessions(folder: Path) -> list[Session]:
    """Every offline session zip under ``folder`` (any depth)."""
    sessions = []
    for zip_path in sorted(folder.rglob("offline-*.zip")):
        with zipfile.ZipFile(zip_path) as zf:
            data = json.loads(zf.read("task.json"))
        sessions.append(
            Session(
                zip_path,
                str(data["id"]),
                data.get("parent") or None,
                str(data.get("type", "")),
                str(data.get("name", "")),
            )
        )
    return sessions


def upload_order(sessions: list[Session]) -> list[Session]:
    """Parents before their children (any depth); otherwise optimizers first, then by name."""
    by_id = {s.task_id: s for s in sessions}

    def depth(s: Session) -> int:
        seen, d = {s.task_id}, 0
        while s.parent in by_id and s.parent not in seen:
            s = by_id[s.parent]
            seen.add(s.task_id)
            d += 1
        return d

    return sorted(sessions, key=lambda s: (depth(s), s.task_type != "optimizer", s.name))


def upload_sessions(
    folder: Path, importer: Importer | None = None, *, echo: Callable[[str], None] = print
) -> dict[str, str]:
    """Upload every session under ``folder`` not uploaded yet; returns offline id -> new id."""
    if importer is None:
        from clearml import Task

        Task.set_offline(False)
        importer = Task.import_offline_session
    sessions = upload_order(find_sessions(folder))
    new_ids: dict[str, str] = {}
    for s in sessions:  # earlier uploads (markers) count for re-linking
        if s.marker.is_file():
            new_ids[s.task_id] = s.marker.read_text(encoding="utf-8").strip()
    for s in sessions:
        if s.task_id in new_ids:
            continue
        with tempfile.TemporaryDirectory(prefix="xray-hpo-upload-") as tmp:
            session_dir = Path(tmp) / s.task_id
            with zipfile.ZipFile(s.zip_path) as zf:
                zf.extractall(session_dir)
            if s.parent:
                _relink(session_dir / "task.json", s.parent, new_ids, echo)
            new_id = importer(str(session_dir))
        if not new_id:
            raise RuntimeError(f"upload of {s.zip_path} returned no task id")
        new_ids[s.task_id] = str(new_id)
        s.marker.write_text(f"{new_id}\n", encoding="utf-8")
        echo(f"uploaded {s.task_type} task {s.name!r}: {s.task_id} -> {new_id}")
    return new_ids


def _relink(
    task_json: Path, parent: str, new_ids: dict[str, str], echo: Callable[[str], None]
) -> None:
    data: dict[str, Any] = json.loads(task_json.read_text(encoding="utf-8"))
    if parent in new_ids:
        data["parent"] = new_ids[parent]
        task_json.write_text(json.dumps(data), encoding="utf-8")
    elif parent.startswith("offline-"):
        echo(
            f"warning: parent {parent} of {data.get('name')!r} is not in this folder; "
            "it stays linked to that offline id"
        )


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

