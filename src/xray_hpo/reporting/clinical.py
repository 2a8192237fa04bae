"""Report sections for a radiology reviewer: per-class clinical metrics, normal vs pneumonia,
calibration and robustness to acquisition shift, each stating the split protocol beside
its test numbers.

The numbers come from ``metrics/eval.json``, ``metrics/robustness.json`` and
``plots/reliability.csv`` (the evaluate stage); the protocol from the data's manifest or
``data/import_report.json`` when they record one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xray_hpo.data.manifest import CLASSES

PHANTOM_PROTOCOL = "built-in phantoms, generated split"
# Names an importer may record, in words; any other value is shown as written.
PROTOCOL_WORDS = {
    "official": "official test split (the dataset's own test/ folder, unchanged; train and "
                "val drawn from the rest)",
    "resplit": "re-split (all source folders pooled, then split i.i.d. by patient)",
}
LEGACY_IMPORT = ("re-split (all source folders pooled, then split i.i.d. by patient; the "
                 "import did not record a protocol)")


def split_protocol(manifest_csv: str, import_report: Path, sources: Mapping[str, int]) -> str:
    """How the test split was made, in words: a manifest ``protocol`` column, else the
    import report's ``protocol`` (a name or a mapping with ``name``/``description``), else
    what the data's origin (``sources``: images per manifest source) implies.

    The import report is no DVC dependency of the report stage (phantom data has none); a
    new import rewrites ``data/manifest.csv``, which is one.
    """
    rows = list(csv.DictReader(io.StringIO(manifest_csv)))
    named = sorted({r["protocol"] for r in rows if r.get("protocol")})
    if named:
        return "; ".join(PROTOCOL_WORDS.get(n, n) for n in named)
    try:
        report = json.loads(import_report.read_text()) if import_report.is_file() else {}
    except (OSError, ValueError):
        report = {}  # unreadable: fall back to the origin, as for an old import
    recorded = report.get("protocol") if isinstance(report, Mapping) else None
    if isinstance(recorded, Mapping):
        recorded = recorded.get("description") or recorded.get("name")
    if isinstance(recorded, str) and recorded:
        return PROTOCOL_WORDS.get(recorded, recorded)
    synthetic = bool(sources) and all("synthetic" in s.lower() or "phantom" in s.lower()
                                      for s in sources)
    return PHANTOM_PROTOCOL if synthetic else LEGACY_IMPORT


def sections(evaluation: Mapping[str, Any], robustness: Mapping[str, Any],
             reliability_csv: str, protocol: str) -> list[str]:
    """The four sections, in reading order, for the page after its accuracy section."""
    return [clinical_section(evaluation, protocol), pneumonia_section(evaluation, protocol),
            calibration_section(evaluation, reliability_csv, protocol),
            robustness_section(robustness, protocol)]


def clinical_section(evaluation: Mapping[str, Any], protocol: str) -> str:
    clinical = evaluation.get("clinical", {})
    per_class = clinical.get("per_class", {})
    level = f"{float(evaluation.get('confidence', 0.95)):.0%}"
    rows = []
    for cls in CLASSES:
        entry = per_class.get(cls, {})
        rows.append(f"| {cls} | " + " | ".join(
            _estimate(entry, name) for name in ("sensitivity", "specificity", "ppv", "npv",
                                                "auc")) + " |")
    return "\n".join([
        "### Per class, as a radiologist reads it", "",
        f"Test split, n = {evaluation.get('n_test', '?')}; split protocol: {protocol}. "
        f"Each value with its {level} bootstrap interval (the same resampled images as the "
        "accuracy interval).", "",
        "| class (one vs the rest) | sensitivity | specificity | PPV | NPV | ROC-AUC |",
        "|---|---|---|---|---|---|", *rows, "",
        f"Macro ROC-AUC (mean of the three one-vs-rest AUCs): "
        f"**{_estimate(clinical, 'macro_auc')}**.", "",
        "- *Sensitivity*: of the images that truly show this class, the share the model calls "
        "it (recall). *Specificity*: of the other images, the share it correctly does not.",
        "- *PPV* (precision): when the model says this class, how often it is right. *NPV*: "
        "when it says another class, how often this one is really absent. Both depend on "
        "how common each class is in this test split, so they do not carry over to a clinic "
        "with another mix; sensitivity and specificity do not depend on it.",
        "- *ROC-AUC*: the chance that a random image of this class gets a higher probability "
        "for it than a random other image; 0.5 is guessing, 1 a perfect ranking, whatever "
        "threshold is chosen. The curves: `dvc plots show` (ROC curves, one-vs-rest).",
    ])


def pneumonia_section(evaluation: Mapping[str, Any], protocol: str) -> str:
    pn = evaluation.get("pneumonia", {})
    return "\n".join([
        "### Normal vs pneumonia", "",
        "The binary figure most papers on this dataset quote: bacterial and viral collapsed "
        "into *pneumonia*, P(pneumonia) = p_bacterial + p_viral, called pneumonia at "
        f">= {_fmt3(pn.get('threshold'))}. Split protocol: {protocol}.", "",
        "| accuracy | ROC-AUC | sensitivity (pneumonia found) | specificity (normal kept) |",
        "|---|---|---|---|",
        "| " + " | ".join(_estimate(pn, n) for n in ("accuracy", "auc", "sensitivity",
                                                    "specificity")) + " |", "",
        "This question forgives every bacterial/viral mix-up, so it usually scores higher "
        f"than the three-class accuracy (here {_fmt3(pn.get('accuracy'))} against "
        f"{_fmt3(evaluation.get('accuracy'))}); quote the two apart.",
    ])


def calibration_section(evaluation: Mapping[str, Any], reliability_csv: str,
                        protocol: str) -> str:
    cal = evaluation.get("calibration", {})
    bins = list(csv.DictReader(io.StringIO(reliability_csv)))
    rows = [f"| {b['bin_low']}-{b['bin_high']} | {b['count']} | {_fmt3(b['confidence'])} | "
            f"{_fmt3(b['accuracy'])} | {_signed(float(b['accuracy']) - float(b['confidence']))}"
            " |" for b in bins]
    accuracy, confidence = evaluation.get("accuracy"), cal.get("mean_confidence")
    if accuracy is None or confidence is None:
        verdict = ""
    elif confidence > accuracy + 0.02:
        verdict = (f" On average the model is {_pct(confidence)} sure but {_pct(accuracy)} "
                   "right: over-confident.")
    elif confidence < accuracy - 0.02:
        verdict = (f" On average the model is {_pct(confidence)} sure and {_pct(accuracy)} "
                   "right: under-confident.")
    else:
        verdict = (f" Mean confidence {_pct(confidence)} against {_pct(accuracy)} accuracy: "
                   "honest on average.")
    return "\n".join([
        "### Calibration: can the probabilities be taken at their word?", "",
        f"Test split; split protocol: {protocol}. Brier score **{_fmt3(cal.get('brier'))}** "
        "(mean squared distance between the probability vector and the true class; 0 is "
        "perfect, 2 the worst, always answering 1/3 each scores 0.667). Expected calibration "
        f"error **{_fmt3(cal.get('ece'))}** (the images' confidence, their highest class "
        f"probability, in {cal.get('ece_bins', 10)} equal bins; ECE is the image-weighted "
        "mean gap between confidence and accuracy in a bin; 0 is perfectly calibrated)."
        + verdict, "",
        "Reliability diagram as a table (`dvc plots show` draws it against the diagonal):", "",
        "| confidence bin | images | mean confidence | accuracy | accuracy - confidence |",
        "|---|---:|---:|---:|---:|", *rows,
    ])


def robustness_section(robustness: Mapping[str, Any], protocol: str) -> str:
    shifts = robustness.get("shifts", {})
    rows = []
    for name, entry in shifts.items():
        cells = []
        for severity in ("1", "2", "3"):
            level = entry.get(severity, {})
            cell = (f"{_fmt_num(level.get('value'))}: {_pct(level.get('accuracy'))} "
                    f"({_signed_pts(level.get('change'))})")
            low, high = level.get("change_ci_low"), level.get("change_ci_high")
            if low is not None and high is not None and (high < 0 or low > 0):
                cell = f"**{cell}**"
            cells.append(cell)
        rows.append(f"| {name} | {entry.get('parameter', '')} | " + " | ".join(cells) + " |")
    middle = robustness.get("middle_severity", {})
    return "\n".join([
        "### Robustness to acquisition shift", "",
        f"The final model on the same test images (n = {robustness.get('n_test', '?')}; split "
        f"protocol: {protocol}), each altered the way another hospital's scanner, exposure "
        "or positioning might alter them: six shifts at three fixed severities, applied with "
        "torchvision's functional transforms (the noise seeded). Unshifted accuracy "
        f"**{_pct(robustness.get('unshifted_accuracy'))}**. Each cell: the shift's setting, "
        "accuracy, change in points; **bold** where the change's "
        f"{float(robustness.get('confidence', 0.95)):.0%} paired bootstrap interval excludes "
        "zero (`metrics/robustness.json`).", "",
        "| shift | setting | severity 1 | severity 2 | severity 3 |", "|---|---|---|---|---|",
        *rows, "",
        f"At the middle severity the mean accuracy is {_pct(middle.get('mean_accuracy'))}; the "
        f"worst shift is *{middle.get('worst_shift', '?')}* "
        f"({_pct(middle.get('worst_accuracy'))}, {_signed_pts(middle.get('worst_change'))}).",
        "",
        "**What it means.** This is a warning of how the model may fare on another "
        "hospital's images, not a measurement of it. A model that loses many points under a "
        "mild gamma or contrast change has learned the look of this dataset's images (their "
        "exposure, their framing) rather than the lungs, and its test accuracy will not "
        "carry over to a new site. Small drops are necessary, not sufficient: real sites "
        "differ in ways these six shifts do not cover (other scanners, patients, "
        "annotations), so only a test set from another site can confirm the accuracy. The "
        "chart: `dvc plots show` (accuracy under acquisition shift).",
    ])


# --- formatting ----------------------------------------------------------------------------

def _estimate(entry: Mapping[str, Any], name: str) -> str:
    """``0.820 [0.714, 0.923]``; undefined values (null) as a dash."""
    value = entry.get(name)
    if value is None:
        return "–"
    low, high = entry.get(f"{name}_ci_low"), entry.get(f"{name}_ci_high")
    interval = f" [{_fmt3(low)}, {_fmt3(high)}]" if low is not None and high is not None else ""
    return f"{_fmt3(value)}{interval}"


def _fmt3(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.3f}"


def _fmt_num(value: Any) -> str:
    return "–" if value is None else f"{float(value):g}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _signed_pts(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):+.1f} pts"
