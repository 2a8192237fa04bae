"""Import the Kermany et al. (2018) chest X-ray dataset into the canonical raw tree.

``xray-hpo import-kermany SOURCE`` reads ``train|val|test/NORMAL|PNEUMONIA`` at any depth of a
folder or a .zip, labels files by folder and name, decodes them to small grayscale PNGs,
splits them grouped by patient and by duplicate, and swaps ``<out>/`` in whole.
The dataset's own test/ folder, when present, stays the test split (protocol.py); ``--resplit``
pools it too. Its val/ folder (16 images) is too small to select a model: it joins train's pool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xray_hpo.atomic import atomic_directory, atomic_write_json, sigterm_as_interrupt
from xray_hpo.config import ConfigError, load_kermany_config
from xray_hpo.data.kermany.decode import DEFAULT_MAX_SIZE, decode_all
from xray_hpo.data.kermany.protocol import (
    OFFICIAL_TEST,
    OfficialTest,
    Protocol,
    check_sizes,
    choose_protocol,
    copy_order,
    label_conflict_notes,
    lost_test_files,
    plan_official,
    protocol_record,
    separate_official_test,
    train_val_rule,
)
from xray_hpo.data.kermany.source import (
    KermanyImportError,
    SourceFile,
    Unlabeled,
    discover,
    label_file,
)
from xray_hpo.data.kermany.split import (
    SplitError,
    SplitItem,
    SplitPlan,
    plan_all,
    plan_balanced,
)
from xray_hpo.data.manifest import (
    CLASSES,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    SPLITS,
    ManifestRow,
    write_manifest,
    write_split_protocol,
)

__all__ = ["KermanyImportError", "add_cli", "import_kermany"]

DEFAULT_SIZES: tuple[int, int, int | None] = (206, 45, None)  # the original study's; test: max
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
REPORT_NAME = "import_report.json"


@dataclass(frozen=True)
class ImportOptions:
    source: Path
    out: Path = Path("data")
    seed: int = 42
    sizes: tuple[int, int, int | None] = DEFAULT_SIZES
    use_all: bool = False
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    max_size: int = DEFAULT_MAX_SIZE
    jobs: int = 1
    resplit: bool = False  # pool the dataset's own test/ folder too (the pre-protocol behaviour)
    force: bool = False  # replace a non-empty --out that holds no tree this project wrote


@dataclass(frozen=True)
class ImportResult:
    counts: dict[str, dict[str, int]]
    skipped: list[dict[str, str]]
    report_path: Path
    split_protocol: dict[str, object] | None = None  # the record in <out>/split_protocol.json


# --- the import -----------------------------------------------------------------------------

def _check_paths(source: Path, out: Path, force: bool = False) -> None:
    if not source.exists():
        raise KermanyImportError(f"{source}: not found; expected the Kermany folder or .zip")
    if not (source.is_dir() or source.is_file()):  # a FIFO would hang the zip check
        raise KermanyImportError(f"{source}: not a folder or a .zip; expected the Kermany "
                                 "dataset")
    src, dst, here = source.resolve(), out.resolve(), Path.cwd().resolve()
    if out.name in ("", ".", "..") or dst == here or dst in here.parents:
        # The swap replaces <out> whole: never the folder the user stands in or above it.
        raise KermanyImportError(f"--out {out}: is the current folder or one above it; "
                                 "give the import a folder of its own, e.g. --out data")
    if dst == src or dst in src.parents:
        # The swap replaces <out> whole, so it would delete the very files being imported.
        raise KermanyImportError(f"{source}: lies inside --out {out}; move it out of {out} first")
    if out.exists() and not out.is_dir():
        raise KermanyImportError(f"{out}: exists and is not a folder; expected a folder for --out")
    if not force and out.is_dir() and any(out.iterdir()) and not _written_here(out):
        raise KermanyImportError(
            f"--out {out}: not empty and not a dataset this project wrote (no {REPORT_NAME} "
            f"or {MANIFEST_NAME}); the import replaces it whole: pass --force to replace it, "
            "or choose another --out")


def _written_here(out: Path) -> bool:
    """A previous import (its report) or the built-in phantoms (the manifest's header)."""
    if (out / REPORT_NAME).is_file():
        return True
    manifest = out / MANIFEST_NAME
    try:
        with manifest.open(encoding="utf-8") as handle:
            return handle.readline().strip() == ",".join(MANIFEST_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def import_kermany(options: ImportOptions) -> ImportResult:
    """Build the canonical tree, manifest and report in a temporary folder; swap in on success."""
    _check_paths(options.source, options.out, options.force)
    files, passed_over = discover(options.source)
    protocol = choose_protocol(files, options.resplit)
    check_sizes(protocol, options.sizes, options.use_all, options.fractions)
    skipped: list[dict[str, str]] = list(passed_over)
    labelled: list[tuple[SourceFile, str, str]] = []
    for file in files:
        try:
            labelled.append((file, *label_file(file.folder_class, PurePosixPath(file.name).name)))
        except Unlabeled as exc:
            skipped.append({"source": file.name, "reason": f"unlabeled: {exc}"})

    with atomic_directory(options.out) as staging:
        incoming = staging / ".incoming"
        incoming.mkdir()
        names = [file.name for file, _, _ in labelled]
        results = decode_all(options.source, names, incoming, options.max_size, options.jobs)
        items: dict[str, SplitItem] = {}
        seen_copies: dict[tuple[str, str], str] = {}
        # Official test files first, so that of two copies the train one is the one left out.
        results.sort(key=lambda r: (copy_order(protocol, labelled[r[0]][0].name), r[0]))
        for index, source_sha, pixel_sha, reason in results:
            file, cls, patient = labelled[index]
            base_name = PurePosixPath(file.name).name
            if reason:
                skipped.append({"source": file.name, "reason": reason})
            elif (base_name, source_sha) in seen_copies:
                # Same name and bytes: a second copy of the tree (nested folder in some zips).
                first = seen_copies[(base_name, source_sha)]
                skipped.append({"source": file.name, "reason": f"copy of {first}"})
            else:
                seen_copies[(base_name, source_sha)] = file.name
                items[file.name] = SplitItem(file.name, cls, patient, source_sha, pixel_sha)
        official = separate_official_test(items) if protocol.name == OFFICIAL_TEST else None
        skipped.extend(_drop_label_conflicts(items))  # official: the train/val pool only

        plan = _plan(options, list(items.values()), official)
        if official is not None:
            skipped.extend(official.duplicates + official.patients)
            items.update(official.items)
        index_of = {name: index for index, name in enumerate(names)}
        output_names = _output_names(list(items.values()))
        rows = []
        for key, split in plan.assignment.items():
            item = items[key]
            relative = f"{split}/{item.cls}/{output_names[key]}"
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(incoming / f"{index_of[key]:06d}.png", staging / relative)
            rows.append(ManifestRow(split, item.cls, relative, item.patient_id, item.pixel_sha256,
                                    key))
        shutil.rmtree(incoming)
        write_manifest(staging, rows)
        counts = {split: dict.fromkeys(CLASSES, 0) for split in SPLITS}
        for row in rows:
            counts[row.split][row.cls] += 1
        skipped.sort(key=lambda entry: entry["source"])
        record = _split_protocol(options, protocol, official, skipped)
        write_split_protocol(staging, record)
        atomic_write_json(staging / REPORT_NAME, {
            "protocol": protocol.name,
            "split_protocol": record,
            "official_test_sources": None if official is None else {
                key: item.source_sha256 for key, item in sorted(official.items.items())},
            "source": options.source.name,
            "mode": "all" if options.use_all else "balanced",
            "seed": options.seed,
            "sizes": None if options.use_all else list(options.sizes),
            "fractions": list(options.fractions) if options.use_all else None,
            "max_size": options.max_size,
            "files_found": len(files),
            "imported": len(rows),
            "not_selected": len(items) - len(rows),
            "counts": counts,
            "notes": plan.shortfalls + (label_conflict_notes(official) if official else []),
            "skipped": skipped,
        })
    return ImportResult(counts, skipped, options.out / REPORT_NAME, record)


def _plan(options: ImportOptions, pool: list[SplitItem], official: OfficialTest | None
          ) -> SplitPlan:
    """The balanced or --all rule over every split, or over train/val beside the official test."""
    if official is not None:
        return plan_official(pool, official, options.use_all, options.sizes, options.fractions,
                             options.seed)
    if options.use_all:
        return plan_all(pool, options.fractions, options.seed)
    return plan_balanced(pool, options.sizes, options.seed)


def _split_protocol(options: ImportOptions, protocol: Protocol, official: OfficialTest | None,
                    skipped: list[dict[str, str]]) -> dict[str, object]:
    rule = train_val_rule(protocol, options.use_all, options.sizes, options.fractions)
    lost = lost_test_files(skipped) if official is not None else []
    return protocol_record(protocol, official, rule, lost)


def _drop_label_conflicts(items: dict[str, SplitItem]) -> list[dict[str, str]]:
    """Remove images whose bytes or pixels also appear under another class: never guess."""
    classes_of: dict[str, set[str]] = defaultdict(set)
    for item in items.values():
        classes_of[item.source_sha256].add(item.cls)
        classes_of[item.pixel_sha256].add(item.cls)
    dropped = []
    for key in sorted(items):
        item = items[key]
        labels = classes_of[item.source_sha256] | classes_of[item.pixel_sha256]
        if len(labels) > 1:
            del items[key]
            dropped.append({"source": key,
                            "reason": f"same image labelled {' and '.join(sorted(labels))}"})
    return dropped


def _output_names(items: list[SplitItem]) -> dict[str, str]:
    """<stem>.png, plus a hash suffix where two different sources share a stem."""
    stems = {item.key: PurePosixPath(item.key).stem for item in items}
    repeated = Counter(stems.values())
    return {
        item.key: f"{stems[item.key]}.png" if repeated[stems[item.key]] == 1
        else f"{stems[item.key]}-{item.source_sha256[:12]}.png"
        for item in items
    }


# --- command line ---------------------------------------------------------------------------

def _size(text: str) -> int | None:
    if text == "max":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'max', got {text!r}")
    return int(text)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``import-kermany``; the handler is ``args.func(args) -> exit code``."""
    parser = subparsers.add_parser(
        "import-kermany", help="import the Kermany chest X-ray dataset (folder or .zip)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("source", type=Path, metavar="SOURCE",
                        help="dataset folder (with train|val|test/NORMAL|PNEUMONIA) or its .zip")
    parser.add_argument("--out", type=Path, default=Path("data"), help="raw tree (default: data)")
    parser.add_argument("--dvc-add", action="store_true", help="run `dvc add OUT` afterwards")
    parser.add_argument("--seed", type=int, default=None,
                        help="split seed (default: params.yaml kermany.seed, else 42)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sizes", nargs=3, type=_size, metavar=("TRAIN", "VAL", "TEST"),
                       help="balanced split sizes; only TEST may be max (default: params.yaml "
                            "kermany.train/val/test, else 206 45 max)")
    group.add_argument("--all", dest="use_all", action="store_true", default=None,
                       help="use every image, split by --fractions (imbalanced: set "
                            "train.class_weighting: balanced; default: params.yaml kermany.all)")
    parser.add_argument("--fractions", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                        default=None, help="with --all (default: params.yaml kermany.fractions, "
                                           "else 0.7 0.15 0.15)")
    parser.add_argument("--resplit", action="store_true",
                        help="pool the dataset's own test/ folder with train/ and val/ and "
                             "re-split i.i.d. (default: keep test/ as the test split)")
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE,
                        help=f"longer side of stored images, px (default: {DEFAULT_MAX_SIZE})")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even when it holds files this project did not "
                             "write (default: refuse)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="decoding processes (default: up to 2)")
    parser.set_defaults(func=run_cli)


PARAMS_FILE = Path("params.yaml")


def resolve_defaults(args: argparse.Namespace, params: Path = PARAMS_FILE) -> argparse.Namespace:
    """Fill the options not given on the command line from ``params.yaml``'s ``kermany``
    section (read from the current directory when present; built-in defaults otherwise).

    ``--sizes`` selects the balanced mode and ``--all`` the every-image mode, whatever
    ``kermany.all`` says; without either, ``kermany.all`` decides.
    """
    defaults = load_kermany_config(params)
    use_all = args.use_all if args.use_all else (args.sizes is None and defaults.all)
    return argparse.Namespace(**{
        **vars(args),
        "seed": defaults.seed if args.seed is None else args.seed,
        "sizes": tuple(args.sizes) if args.sizes else defaults.sizes,
        "use_all": bool(use_all),
        "fractions": tuple(float(f) for f in (args.fractions or defaults.fractions)),
        "defaults_from": f"{params} (kermany)" if params.is_file() else "built-in defaults",
    })


def run_cli(args: argparse.Namespace) -> int:
    try:
        args = resolve_defaults(args)
        sizes = args.sizes
        if None in sizes[:2]:
            raise KermanyImportError("--sizes: only TEST may be 'max'; TRAIN and VAL need counts")
        if args.max_size < 8 or args.jobs < 1:
            raise KermanyImportError("--max-size: expected >= 8 px; --jobs: expected >= 1")
        if min(args.fractions) < 0 or sum(args.fractions) <= 0:
            raise KermanyImportError("--fractions: expected three numbers >= 0, not all zero")
        options = ImportOptions(args.source, args.out, args.seed, sizes, args.use_all,
                                tuple(args.fractions), args.max_size, args.jobs,
                                resplit=args.resplit, force=getattr(args, "force", False))
        with sigterm_as_interrupt():  # kill: the staging folder is removed, --out untouched
            result = import_kermany(options)
        if args.dvc_add:
            _dvc_add(args.out)
    except (KermanyImportError, SplitError, ConfigError) as exc:
        print(f"xray-hpo import-kermany: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xray-hpo import-kermany: interrupted; {args.out} left as it was",
              file=sys.stderr)
        return 130
    split_text = ", ".join(
        f"{split} {sum(result.counts[split].values())} "
        f"({'/'.join(str(result.counts[split][cls]) for cls in CLASSES)})" for split in SPLITS)
    mode = (f"--all, fractions {' '.join(f'{f:g}' for f in args.fractions)}" if args.use_all
            else "balanced, sizes " + " ".join("max" if n is None else str(n) for n in args.sizes))
    print(f"imported into {args.out}: {split_text} [normal/bacterial/viral]")
    print(f"settings: {mode}, seed {args.seed} (unset options from {args.defaults_from})")
    print(f"skipped {len(result.skipped)} file(s); reasons in {result.report_path}")
    print_split_protocol(result.split_protocol or {})
    print(next_steps(args.out, dvc_added=args.dvc_add))
    return 0


def print_split_protocol(record: dict[str, object]) -> None:
    """The protocol on stdout; a re-split's caveat (or an incomplete official test) on stderr."""
    print(f"split protocol: {record.get('protocol')} ({record.get('reason')})")
    official = record.get("official_test")
    dropped = record.get("dropped_from_train_val")
    if isinstance(official, dict) and isinstance(dropped, dict):
        print(f"  test: the official test/ folder as it is, {official['images']} images; left "
              f"out of train/val: {dropped['same_pixels_as_test']} with the pixels of a test "
              f"image, {dropped['patient_in_test']} of a test patient")
    if record.get("warning"):
        sys.stdout.flush()  # the warning right below the protocol, also when stdout is piped
        print(f"xray-hpo import-kermany: warning: {record['warning']}", file=sys.stderr)


def _dvc_add(out: Path) -> None:
    # The venv's dvc when the venv is not activated (its bin/ is then not on PATH).
    dvc = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if dvc is None:
        raise KermanyImportError(f"dvc: not found on PATH; the import in {out} is done, "
                                 f"run `dvc add {out}` yourself")
    completed = subprocess.run([dvc, "add", str(out)], check=False)
    if completed.returncode != 0:
        raise KermanyImportError(f"`dvc add {out}` failed (exit {completed.returncode}); "
                                 f"the import in {out} is done, fix DVC and run it again")


def next_steps(out: Path, dvc_added: bool) -> str:
    steps = [] if dvc_added else [f"dvc add {out}"]
    steps += [
        f"git add {out}.dvc .gitignore",
        "dvc remote add -d storage <URL>   # once: e.g. s3://bucket/xray-hpo or /mnt/dvc-store",
        "dvc push",
        'git commit -m "Import the Kermany chest X-ray dataset"',
    ]
    return "next steps:\n" + "\n".join(f"  {step}" for step in steps)

