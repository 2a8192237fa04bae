"""The report's Grad-CAM gallery: which images it shows, and that a browser shows them."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_report import CHROMIUM, CHROMIUM_FLAGS, _study, render, rendered_problems

from xray_hpo.data.dataset import PreparedSplit, save_prepared
from xray_hpo.model import ModelArgs, XrayCNN, save_model
from xray_hpo.reporting.figures import figures_html, write_figures
from xray_hpo.reporting.gallery import attention_sentence, build_gallery, pick_examples
from xray_hpo.tuning.assessment import assess

# Recorded into the DOM once the page has loaded: each gallery picture's decoded size.
IMAGE_PROBE = ("<script>window.addEventListener('load',function(){var s=[];document."
               "querySelectorAll('img.gallery').forEach(function(i){s.push(i.id+':'+"
               "i.naturalWidth+'x'+i.naturalHeight)});document.documentElement.setAttribute("
               "'data-gallery',s.join(';'))});</script>")


def test_gallery_shows_the_most_confident_mistakes_first() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05],   # correct, 0.9
                      [0.2, 0.7, 0.1],     # mistake, 0.7
                      [0.1, 0.1, 0.8],     # mistake, 0.8: shown first
                      [0.6, 0.3, 0.1],     # correct, 0.6
                      [0.2, 0.7, 0.1],
                      [0.2, 0.7, 0.1],     # tie with row 4: the lower index first
                      [0.5, 0.3, 0.2]])
    galleries = pick_examples(labels, probs, [f"img{i}.png" for i in range(7)], per_kind=3)
    normal, bacterial, viral = galleries
    assert [e.index for e in normal.correct] == [0, 3]
    assert [(e.index, e.predicted) for e in normal.mistakes] == [(2, "viral"), (1, "bacterial")]
    assert normal.mistakes[0].probability == pytest.approx(0.8)
    assert [e.index for e in bacterial.correct] == [4, 5] and not bacterial.mistakes
    assert not viral.correct and [e.index for e in viral.mistakes] == [6]


def test_the_attention_line_says_lungs_even_or_border() -> None:
    areas = {"images": 150, "empty_maps": 0, "centre_area": 0.35, "border_area": 0.34}
    lungs = attention_sentence({**areas, "centre": 0.7, "border": 0.1})
    even = attention_sentence({**areas, "centre": 0.36, "border": 0.33})
    border = attention_sentence({**areas, "centre": 0.2, "border": 0.5})
    assert "**70%** of the mass in the central lung region, **10%** in the image border" in lungs
    assert "evenly" not in lungs and "Flag" not in lungs
    assert "spread almost evenly" in even and "Flag" not in even
    assert "Flag: more attention on the border" in border


@pytest.fixture
def gallery_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """An untrained model and 30 random test images: arbitrary but exact predictions."""
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    save_model(XrayCNN(ModelArgs(image_size=32, lin1_size=16, lin2_size=8, p_dropout=0.0)),
               model)
    rng = np.random.default_rng(0)
    test = tmp_path / "prepared" / "test.npz"
    save_prepared(PreparedSplit(rng.integers(0, 256, (30, 32, 32), dtype=np.uint8),
                                np.arange(30) % 3, np.array([f"t/{i}.png" for i in range(30)])),
                  test)
    return model, test


def test_gallery_is_deterministic_and_its_pictures_are_small(
        tmp_path: Path, gallery_inputs: tuple[Path, Path]) -> None:
    first = build_gallery(*gallery_inputs, tmp_path / "a")
    second = build_gallery(*gallery_inputs, tmp_path / "b")
    pngs = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert pngs == ["gallery_bacterial.png", "gallery_normal.png", "gallery_viral.png"]
    for name in pngs:
        data = (tmp_path / "a" / name).read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes() and len(data) < 150_000
    assert first.markdown == second.markdown and first.html == second.html
    shown = sum(len(g.correct) + len(g.mistakes) for g in first.classes)
    assert first.markdown.count("| correct |") + first.markdown.count("| **mistake** |") == shown
    assert "Where attention falls" in first.markdown and "30 test images" in first.markdown


def screenshot(html: Path, out: Path) -> np.ndarray:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--hide-scrollbars", "--window-size=1000,900",
                               f"--screenshot={out}", html.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def coloured_pixels(shot: np.ndarray) -> int:
    """Strongly coloured pixels: the overlays and the green/red captions (the page's own
    text is black on white)."""
    return int(((shot.max(axis=2) - shot.min(axis=2)) > 80).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                    "(apt-get install -y chromium): cannot render the HTML gallery")
def test_the_page_shows_the_gallery_in_headless_chromium(
        tmp_path: Path, gallery_inputs: tuple[Path, Path]) -> None:
    gallery = build_gallery(*gallery_inputs, tmp_path / "figures")
    html = tmp_path / "figures.html"
    importance = assess(_study().trials, n_resamples=3, n_trees=4).metrics()
    write_figures(_study().trials, importance, tmp_path / "figures", html,
                  extra_html=gallery.html)
    page = html.read_text()
    assert page.count('<img class="gallery"') == 3 and "Where attention falls" in page

    # The whole page: every gallery picture decodes, at its PNG's size, and no script fails.
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + IMAGE_PROBE, 1))
    dom, console = render(probed)
    assert rendered_problems(dom, console, re.findall(r'<div id="(fig-[a-z-]+)"', page)) == []
    sizes = dict(item.split(":") for item in
                 re.search(r'data-gallery="([^"]*)"', dom).group(1).split(";"))  # type: ignore[union-attr]
    for gal in gallery.classes:
        with Image.open(tmp_path / "figures" / f"{gal.name}.png") as png:
            assert sizes[gal.name] == f"{png.width}x{png.height}"

    # What a person sees: the gallery section on its own, as figures.html renders it.
    alone = tmp_path / "gallery.html"
    alone.write_text(figures_html([], {}, gallery.html))
    shown = coloured_pixels(screenshot(alone, tmp_path / "shot.png"))
    # The check can fail: the same page with undecodable pictures shows no colour.
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", alone.read_text()))
    hidden = coloured_pixels(screenshot(broken, tmp_path / "broken.png"))  # a broken-image icon
    assert shown > 5000 and hidden < shown / 20
