"""ClearML settings: the tracking mode, the user's configuration and credentials, the
per-run folder and fast config, and the one server check per process.

Process model (why trials live in worker processes): ClearML keeps ONE open task per
process (``Task.init`` while another task is open raises). The tune coordinator holds the
optimizer task for the whole study, so every trial task is opened in a worker process
(spawned with :func:`worker_environment`), one after another: open, log epochs, close.

Modes (``XRAY_HPO_CLEARML`` = off | offline | online | auto): ``auto`` logs online when
ClearML credentials are configured and offline (the SDK's own offline mode, session
files under ``runs/clearml/<run>/``) otherwise. ``off`` never imports clearml. Tracking
never changes results and never stops a run: an unreachable server or rejected
credentials degrade to offline with one warning. ``XRAY_HPO_CLEARML_PROJECT`` names the
ClearML project (default ``xray-hpo``); like the mode it changes no result.

Nothing here runs at import time; clearml is imported lazily on the first tracker.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from xray_hpo.errors import SettingError

TrackingMode = Literal["off", "offline", "online"]
ENV_MODE = "XRAY_HPO_CLEARML"  # off | offline | online | auto (default auto)
ENV_PARENT = "XRAY_HPO_CLEARML_PARENT"  # optimizer task id, for trial tasks in workers
ENV_RUN_DIR = "XRAY_HPO_CLEARML_RUN_DIR"  # per-run folder: generated config + offline sessions
ENV_BASE_DIR = "XRAY_HPO_CLEARML_DIR"  # where run folders are created (default runs/clearml)
ENV_GENERATED = "XRAY_HPO_CLEARML_CONFIG"  # our generated config: not a user credential
ENV_USER_CONFIG = "XRAY_HPO_CLEARML_USER_CONFIG"  # the user's clearml.conf our config includes
ENV_PROJECT = "XRAY_HPO_CLEARML_PROJECT"  # the ClearML project (default xray-hpo)
DEFAULT_BASE_DIR = Path("runs") / "clearml"
PROJECT = "xray-hpo"
# Where a study keeps its optimizer task (Optuna study user attribute): a resumed study
# continues that task, and remote workers parent their trials to it.
STUDY_ATTR_OPTIMIZER = "clearml_optimizer_task"
TRIAL_ATTR_TASK = "clearml_task_id"  # a trial's own task id, set by the worker
STUDIES_FILE = "studies.json"  # under the base dir: study -> optimizer task, for train_best
SERVER_TIMEOUT_S = 3.0

# Set by ClearML in the process that owns a task; a child that inherits them gets the
# parent's task back instead of its own. CLEARML_TASK_ID would attach it to an agent's task.
_INHERITED_TASK_VARS = (
    "CLEARML_PROC_MASTER_ID",
    "TRAINS_PROC_MASTER_ID",
    "CLEARML_TASK_ID",
    "TRAINS_TASK_ID",
)
# Every framework hook off: a trial needs none (no torch.save wrapping, no matplotlib capture).
# fmt: off
FRAMEWORKS = (
    "hydra", "scikit", "joblib", "matplotlib", "tensorflow", "tensorboard", "tfdefines",
    "pytorch", "megengine", "xgboost", "catboost", "fastai", "lightgbm", "gradio", "jsonargparse",
)
# fmt: on

log = logging.getLogger(__name__)


def resolve_mode(environ: Mapping[str, str] = os.environ) -> TrackingMode:
    """The tracking mode the environment asks for; ``auto`` picks online iff credentials exist."""
    raw = (environ.get(ENV_MODE) or "auto").strip().lower()
    if raw in ("off", "offline", "online"):
        return raw  # type: ignore[return-value]
    if raw != "auto":
        raise SettingError(f"{ENV_MODE}={raw!r}: expected off, offline, online or auto")
    if environ.get("CLEARML_OFFLINE_MODE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "offline"
    return "online" if credentials_configured(environ) else "offline"


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


def user_config_file(environ: Mapping[str, str]) -> Path | None:
    """The clearml.conf ClearML itself would read, never the one this module generated."""
    if environ.get(ENV_USER_CONFIG):
        return Path(environ[ENV_USER_CONFIG])
    override = _env(environ, "CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE")
    if override and override != environ.get(ENV_GENERATED):
        path = Path(os.path.expandvars(override)).expanduser()
        return path if path.is_file() else None  # ClearML reads only the override when set
    home = Path(environ.get("HOME") or Path.home())
    return next((p for p in (home / "clearml.conf", home / "trains.conf") if p.is_file()), None)


def credentials_configured(environ: Mapping[str, str]) -> bool:
    keys = _env(environ, "CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY") and _env(
        environ, "CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY"
    )
    host = _env(environ, "CLEARML_API_HOST", "TRAINS_API_HOST")
    return bool(keys and host) or user_config_file(environ) is not None


def worker_environment(
    parent_task_id: str | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Environment for a trial worker: its own tasks, the same mode, config and run folder."""
    env = {k: v for k, v in environ.items() if k not in _INHERITED_TASK_VARS}
    env.pop("CLEARML_LOG_ENVIRONMENT", None)  # would copy env vars (keys) into task params
    env[ENV_MODE] = resolve_mode(environ)
    if parent_task_id:
        env[ENV_PARENT] = parent_task_id
    else:
        env.pop(ENV_PARENT, None)
    return env


def parent_task_id(environ: Mapping[str, str] = os.environ) -> str | None:
    return environ.get(ENV_PARENT) or None


def project_name(environ: Mapping[str, str] = os.environ) -> str:
    """The ClearML project every task goes to: ``XRAY_HPO_CLEARML_PROJECT``, else xray-hpo."""
    name = (environ.get(ENV_PROJECT) or "").strip()
    return name or PROJECT


def base_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ENV_BASE_DIR) or DEFAULT_BASE_DIR)


def remember_optimizer(study_name: str, task_id: str, mode: str,
                       environ: Mapping[str, str] = os.environ) -> None:
    """Record which task is a study's optimizer, for train_best and evaluate to link to
    (they read best_params.yaml, not the study's storage). Not a pipeline output."""
    path = base_dir(environ) / STUDIES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    known = read_optimizers(environ)
    known[study_name] = {"task_id": task_id, "mode": mode, "project": project_name(environ)}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def read_optimizers(environ: Mapping[str, str] = os.environ) -> dict[str, dict[str, str]]:
    path = base_dir(environ) / STUDIES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}




def mask(text: str) -> str:
    """Hide anything key-like (long opaque tokens, URL user-info) before printing it."""
    text = re.sub(r"://[^/@\s]+@", "://***@", text)
    return re.sub(r"\b[A-Za-z0-9_\-]{20,}\b", lambda m: m.group(0)[:4] + "***", text)


# --- process set-up ---------------------------------------------------------------------

FAST_CONFIG = """\
# Generated by xray_hpo.tracking.trackers for one run; holds no credentials (they stay in the
# included user file or the environment).
{include}
sdk.development.report_use_subprocess: false  # a reporting subprocess made close() 6-12 s
sdk.development.vcs_repo_detect_async: false  # async detection stalled close() up to 300 s
sdk.development.store_uncommitted_code_diff: false
sdk.development.detect_with_pip_freeze: false  # pip freeze is a slow subprocess
sdk.development.log_os_environments: []  # never copy env vars (credentials) into params
sdk.development.suppress_update_message: true
"""


PROCESS_VARS = (
    ENV_RUN_DIR,
    ENV_GENERATED,
    ENV_MODE,
    ENV_USER_CONFIG,
    "CLEARML_CONFIG_FILE",
    "CLEARML_LOG_ENVIRONMENT",
    "CLEARML_CACHE_DIR",
    "CLEARML_OFFLINE_MODE",
)


def prepare_process(mode: TrackingMode, label: str) -> Path:
    """Point ClearML at this run's folder and fast config, through os.environ so that clearml
    (imported after this) and worker processes (which inherit it) all see the same settings.
    Callers that own a run save PROCESS_VARS first and restore them on close."""
    run_dir_env = os.environ.get(ENV_RUN_DIR)
    if run_dir_env:
        run_dir = Path(run_dir_env)
    else:
        base = base_dir().resolve()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[:60] or "run"
        run_dir = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    user_config = user_config_file(os.environ)
    config = run_dir / "clearml.conf"
    if not config.is_file():  # the process that owns the run; its workers reuse the file
        problem = user_config_problem(user_config) if user_config else None
        if problem:  # ClearML would fail on it in every mode: leave it out, say so once
            _pending_config_problem["problem"] = problem
            user_config = None
        include = f"include file({json.dumps(str(user_config))})" if user_config else ""
        text = FAST_CONFIG.format(include=include)
        tmp = config.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(config)  # atomic: workers may read it concurrently
    os.environ.update({ENV_RUN_DIR: str(run_dir), ENV_GENERATED: str(config), ENV_MODE: mode})
    os.environ["CLEARML_CONFIG_FILE"] = str(config)
    if user_config:
        os.environ[ENV_USER_CONFIG] = str(user_config)
    os.environ.pop("CLEARML_LOG_ENVIRONMENT", None)
    if mode == "offline":
        os.environ["CLEARML_CACHE_DIR"] = str(run_dir)  # sessions: <run_dir>/offline/<id>.zip
        os.environ["CLEARML_OFFLINE_MODE"] = "1"
    return run_dir


_pending_config_problem: dict[str, str] = {}  # set by prepare_process, taken by the tracker


def user_config_problem(path: Path) -> str | None:
    """Why ClearML cannot read the user's configuration file (naming it), else None.

    Parsed with the SDK's own HOCON parser: left to the SDK, a broken file raises in every
    stage, naming our generated file that includes it rather than the user's."""
    from clearml.utilities.pyhocon import ConfigFactory

    try:
        ConfigFactory.parse_file(str(path))
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    except OSError as exc:
        reason = f"unreadable ({exc.strerror or type(exc).__name__})"
    except Exception as exc:  # pyparsing's exceptions, or a bad include/substitution
        where = getattr(exc, "lineno", None)
        detail = f"line {where}, column {exc.column}" if where else " ".join(str(exc).split())
        reason = f"not a valid ClearML configuration ({type(exc).__name__} at {detail})" \
            if where else f"not a valid ClearML configuration ({detail[:200]})"
    else:
        return None
    return f"{path}: {reason}"


def take_config_problem() -> str | None:
    """The user-configuration problem prepare_process found, once (then None)."""
    return _pending_config_problem.pop("problem", None)


_server_problem: dict[str, str | None] = {}  # one check per process, not per trial


def server_problem_once() -> str | None:
    """None if the configured server answers and accepts the credentials, else why not.
    Bounded by SERVER_TIMEOUT_S: the SDK itself retries for minutes on a dead host."""
    if "result" in _server_problem:
        return _server_problem["result"]
    from clearml.backend_api.session import Session
    from clearml.config import config_obj

    host = Session.get_api_server_host()
    access = _env(os.environ, "CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY") or config_obj.get(
        "api.credentials.access_key", None
    )
    secret = _env(os.environ, "CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY") or config_obj.get(
        "api.credentials.secret_key", None
    )
    headers = {}
    if access and secret:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{access}:{secret}".encode()).decode()
        )
    request = urllib.request.Request(f"{host}/auth.login", headers=headers, method="GET")
    problem: str | None = None
    try:
        with urllib.request.urlopen(request, timeout=SERVER_TIMEOUT_S) as response:
            body = response.read(1 << 16)
        if not _is_api_answer(body):
            problem = f"{mask(host)} answers HTTP but is no ClearML API server"
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            problem = f"the ClearML server {mask(host)} rejected the credentials (HTTP {err.code})"
        else:  # 404: a web server, not the API; 5xx: the API is down
            problem = f"{mask(host)} answered HTTP {err.code} to auth.login; not a working " \
                      "ClearML API server"
    except http.client.HTTPException as err:  # BadStatusLine: something else on that port
        problem = f"{mask(host)} does not answer in HTTP ({type(err).__name__}); not a " \
                  "ClearML API server"
    except (OSError, ValueError) as err:
        problem = f"the ClearML server {mask(host)} is unreachable ({type(err).__name__})"
    _server_problem["result"] = problem
    return problem


def _is_api_answer(body: bytes) -> bool:
    """A ClearML API answer is a JSON object with a ``meta`` section."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and "meta" in answer


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Swallow ClearML's own per-task console lines (3 per task offline); we print one."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


