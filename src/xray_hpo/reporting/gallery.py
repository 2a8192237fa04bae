"""The report's failure gallery and attention summary: Grad-CAM over the test split.

For each true class, the most confident correct predictions and the most confident
mistakes, each drawn with its Grad-CAM overlay (of the predicted class), truth, prediction
and probability; plus one line saying how much of the attention falls on the central lung
region and how much on the image border. Everything comes from ``models/model.pt`` and
``prepared/test.npz`` on the CPU with one thread, ties broken by test index, so the same
inputs give the same PNG bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xray_hpo.data.manifest import CLASSES

PER_KIND = 3  # correct ones and mistakes shown per class
PANEL_INCHES, DPI = 1.35, 100  # 135 px per panel: the 64 px arrays at about 2x
EVEN_MARGIN = 1.25  # a central share below 1.25x its area share counts as "evenly spread"


@dataclass(frozen=True)
class Example:
    index: int  # row in prepared/test.npz
    path: str
    truth: str
    predicted: str
    probability: float  # of the predicted class

    @property
    def correct(self) -> bool:
        return self.truth == self.predicted


@dataclass(frozen=True)
class ClassGallery:
    cls: str
    correct: tuple[Example, ...]
    mistakes: tuple[Example, ...]

    @property
    def name(self) -> str:
        return f"gallery_{self.cls}"


@dataclass(frozen=True)
class Gallery:
    classes: tuple[ClassGallery, ...]
    shares: Mapping[str, float | int]
    markdown: str
    html: str


def pick_examples(labels: np.ndarray, probs: np.ndarray, paths: Sequence[str],
                  per_kind: int = PER_KIND) -> list[ClassGallery]:
    """Per true class: the ``per_kind`` most confident correct predictions and mistakes."""
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    out = []
    for c, cls in enumerate(CLASSES):
        # Most confident first; the index breaks ties, so the choice never depends on sort
        # stability or float noise below the ranking.
        rows = sorted((i for i in range(len(labels)) if labels[i] == c),
                      key=lambda i: (-float(confidence[i]), i))
        examples = [Example(i, str(paths[i]), cls, CLASSES[int(predicted[i])],
                            float(confidence[i])) for i in rows]
        out.append(ClassGallery(cls, tuple(e for e in examples if e.correct)[:per_kind],
                                tuple(e for e in examples if not e.correct)[:per_kind]))
    return out


def build_gallery(model_path: Path, test_npz: Path, png_dir: Path) -> Gallery:
    """Grad-CAM over the test split; writes ``png_dir/gallery_<class>.png``."""
    import torch

    from xray_hpo.data.dataset import load_prepared
    from xray_hpo.explain.gradcam import attention_shares, grad_cam
    from xray_hpo.model import load_model

    model = load_model(model_path)
    test = load_prepared(test_npz.parent, test_npz.stem)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on every run
    try:
        pixels = torch.from_numpy(test.images).unsqueeze(1).float().div_(255.0)
        with torch.no_grad():
            probs = torch.softmax(model(pixels), dim=1).numpy()
        maps = grad_cam(model, pixels, probs.argmax(axis=1).tolist())
    finally:
        torch.set_num_threads(threads)
    galleries = pick_examples(test.labels, probs, test.paths.tolist())
    png_dir.mkdir(parents=True, exist_ok=True)
    for gallery in galleries:
        write_class_png(gallery, test.images, maps, png_dir / f"{gallery.name}.png")
    shares = attention_shares(maps)
    return Gallery(tuple(galleries), shares, gallery_markdown(galleries, shares),
                   gallery_html(galleries, shares, png_dir))


def write_class_png(gallery: ClassGallery, images: np.ndarray, maps: np.ndarray,
                    path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xray_hpo.atomic import atomic_path
    from xray_hpo.explain.overlay import colour_overlay

    slots: list[Example | None] = [*gallery.correct, *[None] * (PER_KIND - len(gallery.correct)),
                                   *gallery.mistakes,
                                   *[None] * (PER_KIND - len(gallery.mistakes))]
    fig, axes = plt.subplots(1, len(slots), figsize=(PANEL_INCHES * len(slots),
                                                     PANEL_INCHES + 0.55))
    for n, (ax, example) in enumerate(zip(axes, slots, strict=True)):
        ax.set_xticks([])
        ax.set_yticks([])
        if example is None:
            ax.text(0.5, 0.5, "none" if n < PER_KIND else "no mistake", ha="center",
                    va="center", fontsize=8, color="#777777", transform=ax.transAxes)
            for spine in ax.spines.values():
                spine.set_visible(False)
            continue
        ax.imshow(colour_overlay(images[example.index], maps[example.index]),
                  interpolation="nearest")
        colour = "#1a7f37" if example.correct else "#c62828"
        ax.set_title(f"pred {example.predicted}\np = {example.probability:.2f}", fontsize=8,
                     color=colour)
        for spine in ax.spines.values():
            spine.set_color(colour)
            spine.set_linewidth(2)
    fig.suptitle(f"truth {gallery.cls}: correct (left), mistakes (right), most confident "
                 "first", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)


# --- text ----------------------------------------------------------------------------------

def attention_sentence(shares: Mapping[str, float | int]) -> str:
    """One line: where the Grad-CAM mass falls, and a flag when it is on the border."""
    centre, border = float(shares["centre"]), float(shares["border"])
    line = (f"**Where attention falls** (Grad-CAM of the predicted class, mean over "
            f"{shares['images']} test images): **{centre:.0%}** of the mass in the central "
            f"lung region, **{border:.0%}** in the image border (an even spread would give "
            f"{float(shares['centre_area']):.0%} and {float(shares['border_area']):.0%}: "
            "their shares of the image's area)")
    if shares.get("empty_maps"):
        line += f"; {shares['empty_maps']} image(s) had an empty map"
    if border >= centre:
        return line + (". **Flag: more attention on the border than on the lungs**: the "
                       "model may be reading markers, labels or edges, not the chest.")
    if centre < EVEN_MARGIN * float(shares["centre_area"]):
        return line + (". The attention is spread almost evenly: the model does not single "
                       "out the lungs.")
    return line + "."


def _table(gallery: ClassGallery) -> list[str]:
    rows = ["| kind | test image | truth | prediction | probability |",
            "|---|---|---|---|---:|"]
    for e in (*gallery.correct, *gallery.mistakes):
        kind = "correct" if e.correct else "**mistake**"
        rows.append(f"| {kind} | `{e.path}` | {e.truth} | {e.predicted} | "
                    f"{e.probability:.3f} |")
    return rows


def gallery_markdown(galleries: Sequence[ClassGallery],
                     shares: Mapping[str, float | int]) -> str:
    lines = [
        "## 10. What the model looked at (Grad-CAM)", "",
        attention_sentence(shares), "",
        "Central lung region: the middle 60% of the height and width; border: the outer "
        "frame, 10% of the side wide. Maps: Captum's `LayerGradCam` on the model's last "
        "convolution, upsampled to the image; red is most attention. `xray-hpo predict "
        "--cam DIR` draws the same overlays for any image.",
    ]
    for gallery in galleries:
        lines += ["", f"### Truth: {gallery.cls}", "",
                  f"![Grad-CAM gallery, truth {gallery.cls}](figures/{gallery.name}.png)", "",
                  *_table(gallery)]
    return "\n".join(lines)


def gallery_html(galleries: Sequence[ClassGallery], shares: Mapping[str, float | int],
                 png_dir: Path) -> str:
    """The same gallery for figures.html: PNGs embedded, so the page stays self-contained."""
    from xray_hpo.reporting.figures import _escape

    parts = ["<h2 id=\"gallery\">What the model looked at (Grad-CAM)</h2>",
             f"<p>{_markdown_to_html(attention_sentence(shares))}</p>"]
    for gallery in galleries:
        data = base64.b64encode((png_dir / f"{gallery.name}.png").read_bytes()).decode()
        rows = "".join(
            f"<tr><td>{'correct' if e.correct else '<b>mistake</b>'}</td>"
            f"<td><code>{_escape(e.path)}</code></td><td>{e.truth}</td><td>{e.predicted}</td>"
            f"<td>{e.probability:.3f}</td></tr>"
            for e in (*gallery.correct, *gallery.mistakes))
        parts.append(
            f"<h3>Truth: {gallery.cls}</h3>\n"
            f"<img class=\"gallery\" id=\"{gallery.name}\" alt=\"Grad-CAM gallery, truth "
            f"{gallery.cls}\" src=\"data:image/png;base64,{data}\">\n"
            "<table><tr><th>kind</th><th>test image</th><th>truth</th><th>prediction</th>"
            f"<th>probability</th></tr>{rows}</table>")
    return "\n".join(parts)


def _markdown_to_html(text: str) -> str:
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
