"""The results page's words on how the splits were made, next to the data table.

The record comes from the import's ``data/split_protocol.json``, copied by prepare into
``metrics/data.json`` (the report's input), so a test score is never shown without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xray_hpo.data.manifest import CLASSES


def split_protocol_text(record: Any, sources: Mapping[str, int]) -> str:
    """Which protocol made the splits (``data/split_protocol.json``, via metrics/data.json).

    Generated phantoms have no record and need no words; an import without one predates the
    record, and such imports always re-split every folder.
    """
    if not isinstance(record, Mapping):
        if all("synthetic" in s.lower() or "phantom" in s.lower() for s in sources):
            return ""
        return ("**Split protocol: not recorded** (an import older than "
                "`data/split_protocol.json`; those re-split every folder i.i.d.). Treat *test* "
                "as a re-split, which overstates accuracy on new hospitals' images.")
    text = (f"**Split protocol: `{record.get('protocol')}`** ({record.get('reason')}). "
            f"Test: {record.get('test')}. Train and val: {record.get('train_val')}.")
    official, dropped = record.get("official_test"), record.get("dropped_from_train_val")
    if isinstance(official, Mapping) and isinstance(dropped, Mapping):
        per_class = official.get("per_class", {})
        mix = ", ".join(f"{per_class.get(cls, 0)} {cls}" for cls in CLASSES)
        text += (f" The official test holds {official.get('images')} images ({mix}); "
                 f"{dropped.get('same_pixels_as_test')} train/val candidates with a test "
                 f"image's pixels and {dropped.get('patient_in_test')} of a test patient were "
                 "left out.")
    if record.get("warning"):
        text += f"\n\n**Caveat:** {record['warning']}."
    return text
