"""Where the Optuna study is stored, and opening it: a journal file on one machine (the
default) or an RDB URL (PostgreSQL) that workers on many machines share."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from xray_hpo.errors import SettingError, UserError

ENV_STORAGE = "XRAY_HPO_STORAGE"
# Seconds without a heartbeat after which an RDB trial's worker is taken for dead (default
# HEARTBEAT_GRACE_S); the heartbeat interval is a quarter of it.
ENV_GRACE = "XRAY_HPO_HEARTBEAT_GRACE_S"
DEFAULT_JOURNAL = ".optuna/journal.log"
# A worker that stops beating for GRACE seconds is dead: its trial is failed and replaced.
HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_GRACE_S = 20


def resolve_storage(cli_value: str | None = None, environ: Mapping[str, str] = os.environ,
                    project_root: Path = Path(".")) -> str:
    """CLI option, then $XRAY_HPO_STORAGE, then the project's journal file."""
    value = cli_value or environ.get(ENV_STORAGE)
    if value:
        return value
    return f"journal:{(project_root / DEFAULT_JOURNAL).resolve()}"


def heartbeat_settings(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(interval, grace) in seconds for RDB storages; $XRAY_HPO_HEARTBEAT_GRACE_S overrides."""
    raw = environ.get(ENV_GRACE, "").strip()
    if not raw:
        return HEARTBEAT_INTERVAL_S, HEARTBEAT_GRACE_S
    try:
        grace = int(raw)
    except ValueError:
        raise SettingError(f"${ENV_GRACE}: expected whole seconds >= 2, got {raw!r}") from None
    if grace < 2:
        raise SettingError(f"${ENV_GRACE}: expected whole seconds >= 2, got {raw!r}")
    return max(1, grace // 4), grace


def database_url(spec: str) -> str:
    """The SQLAlchemy URL for an RDB storage spec.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to the psycopg 3 driver; where only
    psycopg2 is installed (as here), name that driver so ``postgresql://...`` just works.
    """
    scheme, sep, rest = spec.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        return f"postgresql://{rest}"
    return spec


class StorageError(UserError):
    """The study's storage cannot be opened (database down, bad URL); one line, redacted."""


def open_storage(spec: str) -> BaseStorage:
    """The storage ``spec`` names ("journal:PATH" or an RDB URL), opened; StorageError
    (one line, password redacted) when it cannot be."""
    if spec.startswith("journal:"):
        path = Path(spec.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.exc import SQLAlchemyError

    interval, grace = heartbeat_settings()
    url = database_url(spec)
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:  # connects (and creates the tables) right away
            with _schema_lock(url):
                return RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                                  engine_kwargs={"pool_pre_ping": True})
        except (SQLAlchemyError, ImportError) as exc:  # the driver's reason, not 130 lines
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"{redact(spec)}: cannot open the Optuna storage: "
                               f"{redact(reason)}") from None


def redact(spec: str) -> str:
    """A storage URL safe to print or log: the password is replaced."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", spec)


# Any 64-bit number names a PostgreSQL advisory lock; this one is "xrayhpo" in ASCII.
SCHEMA_LOCK_KEY = 0x78726179687030


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Opening an RDBStorage creates Optuna's tables when they are missing, and PostgreSQL's
    CREATE TABLE IF NOT EXISTS is not safe against itself: workers that open a fresh
    database at the same moment fail with 'duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"' (4 processes at once: 5 failures in 5 tries). A session
    advisory lock makes them take turns; the next one finds the tables made."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            key = {"key": SCHEMA_LOCK_KEY}
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), key)
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        engine.dispose()
