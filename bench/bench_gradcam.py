"""Benchmark: what Grad-CAM costs, in `xray-hpo predict --cam` and in the report stage.

Part 1, predict: seconds per image of ``predict_paths`` with and without ``--cam`` (goal:
with < 3x without), and of the alternative not shipped (overlays drawn on the original
file), on the phantom test split as generated (150 PNGs, 128 px) and on the
same films as 1024 px JPEGs (the size of real X-rays), with an untrained network of the
default family (cost does not depend on the weights). In-process, so the per-image figure
excludes interpreter start and imports; rounds alternate plain, cam, cam, plain so a
change in machine load hits both alike; the median round counts.

Part 2, report: ``python stages/report.py`` on this checkout's default pipeline outputs
(run ``dvc repro`` first), copied into a temporary project (goal: < 30 s on 2 cores), and
``build_gallery`` alone in-process. ``--compare-with REV`` also times the report stage of
commit REV (e.g. the commit before the gallery) on the same inputs, alternating.

Prints tables and records them in bench/RESULTS_gradcam.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_gradcam.md"
REPORT_INPUTS = ("params.yaml", "dvc.yaml", "best_params.yaml", "data/manifest.csv", "metrics",
                 "plots", "models/model.pt", "prepared/test.npz")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "")
    return (f"{len(os.sched_getaffinity(0))} cores ({cpu}), Python "
            f"{sys.version.split()[0]}")


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# --- part 1: predict -----------------------------------------------------------------------

def make_inputs(root: Path) -> dict[str, list[Path]]:
    from PIL import Image

    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    generate_dataset(root / "data", PhantomSpec())
    pngs = sorted((root / "data" / "test").rglob("*.png"))
    films = root / "films"
    films.mkdir()
    for png in pngs[:60]:
        with Image.open(png) as img:
            img.resize((1024, 1024), Image.Resampling.BICUBIC).save(
                films / f"{png.stem}.jpg", quality=90)
    return {"phantom PNG, 128 px": pngs, "JPEG, 1024 px": sorted(films.iterdir())}


def time_predict(files: list[Path], model: Path, cam_dir: Path | None) -> float:
    from xray_hpo.predict import predict_paths

    if cam_dir is not None:
        shutil.rmtree(cam_dir, ignore_errors=True)
    started = time.perf_counter()
    predictions = predict_paths([str(f) for f in files], model, cam_dir=cam_dir)
    seconds = time.perf_counter() - started
    assert not any(p.error for p in predictions)
    assert cam_dir is None or len(list(cam_dir.iterdir())) == len(files)
    return seconds / len(files)


def time_file_overlays(files: list[Path], model_path: Path, out_dir: Path) -> float:
    """The alternative not shipped: overlays drawn on each original file (re-read at its
    own size, at most 256 px a side) instead of on the model's input. Plain prediction,
    plus Grad-CAM and the file-sized overlays (the model-sized pixels for Grad-CAM are
    decoded outside the clock, as predict already has them)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from xray_hpo.data.dataset import decode_image, to_gray8
    from xray_hpo.explain.gradcam import grad_cam
    from xray_hpo.explain.overlay import colour_overlay, write_png
    from xray_hpo.model import load_model

    model = load_model(model_path)
    seconds = time_predict(files, model_path, None) * len(files)
    for start in range(0, len(files), 64):
        chunk = files[start:start + 64]
        pixels = torch.from_numpy(np.stack([decode_image(f, 64) for f in chunk]))
        pixels = pixels.unsqueeze(1).float().div_(255.0)
        started = time.perf_counter()
        with torch.no_grad():
            targets = model(pixels).argmax(1).tolist()
        for file, heat in zip(chunk, grad_cam(model, pixels, targets), strict=True):
            with Image.open(file) as img:
                img.draft("L", (256, 256))
                gray = to_gray8(ImageOps.exif_transpose(img))
                gray.thumbnail((256, 256), Image.Resampling.BILINEAR)
            write_png(colour_overlay(np.asarray(gray), heat), out_dir / f"{file.stem}.png")
        seconds += time.perf_counter() - started
    return seconds / len(files)


def bench_predict(root: Path, rounds: int) -> list[str]:
    import torch

    from xray_hpo.model import ModelArgs, XrayCNN, save_model

    torch.manual_seed(0)
    model = root / "model.pt"
    save_model(XrayCNN(ModelArgs(image_size=64, lin1_size=96, lin2_size=48, p_dropout=0.2)),
               model)
    rows = ["| input | images | predict (ms/image) | predict --cam (ms/image) | ratio | "
            "goal | not shipped: overlay on the file (ms/image, ratio) |",
            "|---|---:|---:|---:|---:|---|---|"]
    (root / "alt").mkdir()
    for name, files in make_inputs(root).items():
        time_predict(files[:8], model, root / "warm")  # imports, first-call overheads
        plain: list[float] = []
        cam: list[float] = []
        alt: list[float] = []
        for _ in range(rounds):
            plain.append(time_predict(files, model, None))
            cam.append(time_predict(files, model, root / "cams"))
            alt.append(time_file_overlays(files, model, root / "alt"))
            alt.append(time_file_overlays(files, model, root / "alt"))
            cam.append(time_predict(files, model, root / "cams"))
            plain.append(time_predict(files, model, None))
        a, b, c = statistics.median(plain), statistics.median(cam), statistics.median(alt)
        rows.append(f"| {name} | {len(files)} | {1000 * a:.2f} | {1000 * b:.2f} | "
                    f"{b / a:.2f}x | < 3x: {'met' if b / a < 3 else 'NOT met'} | "
                    f"{1000 * c:.2f}, {c / a:.2f}x |")
        print(rows[-1], flush=True)
    return rows


# --- part 2: the report stage --------------------------------------------------------------

def report_project(root: Path, code_rev: str | None) -> Path:
    for name in REPORT_INPUTS:
        source = REPO / name
        if not source.exists():
            raise SystemExit(f"{source}: missing; run `dvc repro` in {REPO} first")
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    if code_rev is None:
        for name in ("src", "stages"):
            shutil.copytree(REPO / name, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        archive = subprocess.run(["git", "archive", code_rev, "src", "stages"], cwd=REPO,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def time_report(project: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "XRAY_HPO_CLEARML": "off"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "stages/report.py"], cwd=project, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def bench_report(root: Path, rounds: int, compare_with: str | None) -> list[str]:
    from xray_hpo.reporting.gallery import build_gallery

    variants = {"this checkout": report_project(root / "new", None)}
    if compare_with:
        variants[f"`{compare_with}`"] = report_project(root / "old", compare_with)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, project in variants.items():
            times[name].append(time_report(project))
    gallery = []
    for _ in range(rounds):
        started = time.perf_counter()
        build_gallery(REPO / "models/model.pt", REPO / "prepared/test.npz", root / "gallery")
        gallery.append(time.perf_counter() - started)
    rows = ["| what | median s | runs (s) | goal |", "|---|---:|---|---|"]
    for name, values in times.items():
        goal = "< 30 s: " + ("met" if statistics.median(values) < 30 else "NOT met") \
            if name == "this checkout" else ""
        rows.append(f"| `python stages/report.py`, code of {name} | "
                    f"{statistics.median(values):.1f} | "
                    f"{', '.join(f'{v:.1f}' for v in values)} | {goal} |")
    rows.append(f"| `build_gallery` alone (150 test images, in-process, imports warm) | "
                f"{statistics.median(gallery):.2f} | "
                f"{', '.join(f'{v:.2f}' for v in gallery)} | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--predict-only", action="store_true",
                        help="part 1 only; prints, records nothing")
    parser.add_argument("--compare-with", metavar="REV",
                        help="also time the report stage of this commit on the same inputs")
    args = parser.parse_args()
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        predict_rows = bench_predict(Path(tmp), args.rounds)
        if args.predict_only:
            return
        report_rows = bench_report(Path(tmp), max(3, args.rounds // 2), args.compare_with)
    text = "\n".join([
        "# Grad-CAM cost (`python bench/bench_gradcam.py"
        + (f" --compare-with {args.compare_with}" if args.compare_with else "") + "`)", "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M')} UTC; load average "
        f"(1/5/15 min) {before} before and {load()} after: "
        "**the machine was shared with other jobs**, so absolute times are inflated and "
        "noisy; the alternating rounds keep the ratios fair.", "",
        "## predict: per image, with and without `--cam`", "",
        f"Median of {2 * args.rounds} alternating runs each, in-process `predict_paths` "
        "(decode, classify; with `--cam` also Grad-CAM of the predicted class and one "
        "overlay PNG per image, drawn on the image as the model saw it: 64 x 64).", "",
        *predict_rows, "",
        "## report stage on the default pipeline's outputs", "",
        *report_rows, "",
    ])
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
