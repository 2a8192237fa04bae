"""``xray-hpo predict PATH...``: classify image files with the trained model.

Each image goes through ``dataset.decode_image`` (exactly prepare's preprocessing) at the
model's own ``image_size``; the model normalises pixels itself. A file that cannot be read
or decoded gets a row with its error, and the others are still predicted.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import pickle
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xray_hpo.data.manifest import CLASSES, IMAGE_SUFFIXES
from xray_hpo.errors import UserError

COLUMNS = ("path", "prediction", *(f"p_{c}" for c in CLASSES), "error")
BATCH = 64


class PredictError(UserError):
    """Nothing to predict with or on: a one-line message (the CLI shows just that)."""


@dataclass(frozen=True)
class Prediction:
    path: str
    prediction: str = ""
    probabilities: tuple[float, ...] = ()
    error: str = ""
    cam: str = ""  # --cam: the overlay PNG written for this image

    def row(self) -> list[str]:
        probs = [f"{p:.6f}" for p in self.probabilities] or [""] * len(CLASSES)
        return [self.path, self.prediction, *probs, self.error]


def check_inputs(paths: Iterable[str | Path]) -> None:
    """A PATH that does not exist is a typo: stop before any work, naming it. (A dangling
    link exists as a name: it gets an error row like any unreadable file.)"""
    missing = [str(raw) for raw in paths if not os.path.lexists(raw)]
    if missing:
        raise PredictError(f"{', '.join(missing)}: no such file or folder")


def collect(paths: Iterable[str | Path]) -> list[tuple[str, Path | None, str]]:
    """(shown path, file or None, error) per input: folders are searched recursively for
    PNG/JPEG names (sorted); a named file is taken whatever its suffix. Anything that is not
    a folder is kept, FIFOs and dangling links included: decode_image gives their error row."""
    found: list[tuple[str, Path | None, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend((str(p), p, "") for p in files)
        elif os.path.lexists(path):
            found.append((str(path), path, ""))
        else:
            found.append((str(path), None, "not found"))
    return found


def predict_paths(paths: Sequence[str | Path], model_path: str | Path,
                  cam_dir: Path | None = None) -> list[Prediction]:
    import numpy as np
    import torch

    from xray_hpo.data.dataset import decode_image
    from xray_hpo.model import load_model

    model_path = Path(model_path)
    if not model_path.is_file():
        raise PredictError(f"{model_path}: model not found; train it first (dvc repro "
                           "train_best) or pass --model")
    try:
        model = load_model(model_path)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: never here
        raise PredictError(f"{model_path}: not a model saved by xray-hpo (it holds Python "
                           "objects besides tensors, which are not loaded, for safety)") from None
    except Exception as exc:  # a truncated or foreign file
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise PredictError(f"{model_path}: not a model saved by xray-hpo ({reason})") from None
    if cam_dir is not None:  # before any work: a model Grad-CAM cannot explain, a bad DIR
        _check_cam(model, cam_dir)
    size = model.args.image_size
    results: dict[int, Prediction] = {}
    pending: list[tuple[int, str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        pixels = torch.from_numpy(np.stack([a for _, _, a in pending])).unsqueeze(1)
        with torch.no_grad():
            probs = torch.softmax(model(pixels.float().div_(255.0)), dim=1).numpy()
        cams = [""] * len(pending)
        if cam_dir is not None:  # Grad-CAM of each predicted class, on the image it saw
            from xray_hpo.explain.overlay import overlay_path, write_overlays

            cams = write_overlays(model, pixels[:, 0].numpy(), probs.argmax(1).tolist(),
                                  [overlay_path(cam_dir, i, s) for i, s, _ in pending])
        for (index, shown, _), p, cam in zip(pending, probs, cams, strict=True):
            results[index] = Prediction(shown, CLASSES[int(p.argmax())],
                                        tuple(float(v) for v in p), cam=cam)
        pending.clear()

    for index, (shown, file, error) in enumerate(collect(paths)):
        if file is None:
            results[index] = Prediction(shown, error=error)
            continue
        try:
            pending.append((index, shown, decode_image(file, size)))
        except (ValueError, OSError) as exc:  # DatasetError is a ValueError
            results[index] = Prediction(shown, error=_one_line(str(exc), shown))
        if len(pending) >= BATCH:
            flush()
    flush()
    return [results[i] for i in sorted(results)]


def _check_cam(model: object, cam_dir: Path) -> None:
    from xray_hpo.explain.gradcam import last_conv

    last_conv(model)  # type: ignore[arg-type]
    if cam_dir.exists() and not cam_dir.is_dir():
        raise PredictError(f"{cam_dir}: not a folder; --cam expects a directory for the "
                           "overlay PNGs")


def _one_line(message: str, shown: str) -> str:
    text = " ".join(message.split())
    return text.removeprefix(f"{shown}: ")


def predictions_csv(predictions: Sequence[Prediction], cam: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((*COLUMNS, "cam") if cam else COLUMNS)
    writer.writerows([*p.row(), p.cam] if cam else p.row() for p in predictions)
    return buffer.getvalue()


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify X-ray images with the trained model, into a CSV",
        description="Classify PNG/JPEG images (files, or folders searched recursively) with "
                    "the trained model, using exactly the prepare stage's preprocessing. "
                    "Writes path,prediction,p_normal,p_bacterial,p_viral,error; an unreadable "
                    "file gets a row with its error instead of stopping the run.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image file or folder")
    parser.add_argument("--model", default="models/model.pt",
                        help="model saved by train_best (default: models/model.pt)")
    parser.add_argument("--out", default="predictions.csv",
                        help="CSV to write, a folder (writes FOLDER/predictions.csv) or '-' "
                             "for stdout (default: predictions.csv)")
    parser.add_argument("--cam", type=Path, metavar="DIR",
                        help="also write a Grad-CAM overlay PNG of the predicted class per "
                             "image into DIR (the CSV gains a 'cam' column with its path)")
    parser.set_defaults(func=_cli_main)


def output_file(out: str) -> Path | None:
    """Where the CSV goes: None for stdout, DIR/predictions.csv for an existing folder."""
    if out == "-":
        return None
    target = Path(out)
    if target.is_dir():
        return target / "predictions.csv"
    if not target.parent.is_dir():
        raise PredictError(f"--out {out}: folder {target.parent} does not exist")
    return target


def _cli_main(args: argparse.Namespace) -> int:
    from xray_hpo.atomic import atomic_write_text

    check_inputs(args.paths)
    target = output_file(args.out)  # before any work, like the inputs
    predictions = predict_paths(args.paths, args.model, cam_dir=args.cam)
    if not predictions:
        raise PredictError("no PNG or JPEG images found in " + ", ".join(args.paths))
    text = predictions_csv(predictions, cam=args.cam is not None)
    if target is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(target, text)
    failed = sum(bool(p.error) for p in predictions)
    where = "stdout" if target is None else str(target)
    print(f"predict: {len(predictions) - failed} image(s) classified, {failed} error row(s) "
          f"-> {where}" + (f", overlays -> {args.cam}/" if args.cam else ""), file=sys.stderr)
    return 0
