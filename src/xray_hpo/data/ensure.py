"""``xray-hpo ensure-data``: make ``data/`` match ``data.dvc`` and sit in the DVC cache.

On a fresh clone there is no cache and no remote, so the built-in phantom set is
regenerated (it is deterministic) and ``dvc add`` puts it in the cache; ``data.dvc``
must come out unchanged, which proves the bytes are the recorded ones. Real data
(another hash) is never overwritten: it has to come from ``dvc pull``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import yaml

from xray_hpo.errors import UserError

DVC_FILE = Path("data.dvc")


class DataSetupError(UserError):
    """The data cannot be materialized here: the message says what to do instead."""


def recorded_md5(dvc_file: Path = DVC_FILE) -> str:
    if not dvc_file.is_file():
        raise DataSetupError(f"{dvc_file}: missing; expected the DVC file that versions data/")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    md5 = outs[0].get("md5")
    if not md5:
        raise DataSetupError(f"{dvc_file}: outs[0].md5 missing; expected a `dvc add data` file")
    return str(md5)


def _dvc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dvc", *args], capture_output=True, text=True, check=False)


def ensure_data(data_dir: Path = Path("data"), dvc_file: Path = DVC_FILE) -> str:
    """Return what was done: 'up to date', 'checked out' or 'generated'."""
    from xray_hpo.data.phantoms.generate import PHANTOM_DATA_MD5, PhantomSpec, generate_dataset

    expected = recorded_md5(dvc_file)
    if _dvc("status", "--quiet", str(dvc_file)).returncode == 0 and data_dir.is_dir():
        status = "up to date"
        if _dvc("commit", "--force", "--quiet", str(dvc_file)).returncode != 0:
            raise DataSetupError(f"{dvc_file}: dvc commit failed")
        return status
    if _dvc("checkout", "--quiet", str(dvc_file)).returncode == 0 and \
            _dvc("status", "--quiet", str(dvc_file)).returncode == 0:
        return "checked out"
    if expected != PHANTOM_DATA_MD5:
        raise DataSetupError(
            f"{dvc_file}: records data {expected} that is not in the DVC cache and is not the "
            f"built-in phantom set; fetch it with `dvc pull` (see README: Real data)")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    generate_dataset(data_dir, PhantomSpec())
    added = _dvc("add", "--quiet", str(data_dir))
    if added.returncode != 0:
        raise DataSetupError(f"dvc add {data_dir} failed: {added.stderr.strip()}")
    if recorded_md5(dvc_file) != expected:
        raise DataSetupError(
            f"{dvc_file}: regenerated phantoms hash to {recorded_md5(dvc_file)}, not {expected}; "
            f"this machine's Pillow/zlib encode differently (see requirements.txt pins)")
    return "generated"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensure-data", help="materialize data/ as data.dvc records it (idempotent)",
        description=__doc__.splitlines()[0] if __doc__ else None)
    parser.set_defaults(func=lambda _args: print(f"data: {ensure_data()}") or 0)
