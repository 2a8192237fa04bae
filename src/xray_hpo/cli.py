"""The ``xray-hpo`` command: everything a user runs besides ``dvc``.

Subcommands register themselves through each module's ``add_cli``, imported here lazily
enough that ``xray-hpo --help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from xray_hpo.errors import UserError

# Modules that contribute subcommands; a missing optional one must not break the others.
SUBCOMMAND_MODULES = (
    "xray_hpo.data.ensure",
    "xray_hpo.tuning.worker",
    "xray_hpo.data.kermany.importer",
    "xray_hpo.tracking.upload",
    "xray_hpo.predict",
)


def _add_make_data(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-data", help="generate the built-in synthetic (phantom) dataset",
        description="Write the built-in synthetic chest X-ray phantoms into OUT. Deterministic: "
                    "the same seed gives the same bytes, so the hashes match data.dvc.")
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder (default: data)")
    parser.set_defaults(func=_make_data)


def _make_data(args: argparse.Namespace) -> int:
    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    rows = generate_dataset(args.out, PhantomSpec())
    print(f"wrote {len(rows)} synthetic images to {args.out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xray-hpo",
        description="Hyperparameter search for a small chest X-ray CNN. The pipeline itself "
                    "runs with `dvc repro`; these commands prepare data, scale out and "
                    "inspect results.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_make_data(subparsers)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:  # the library's user errors are one line: show just that
        print(f"xray-hpo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
