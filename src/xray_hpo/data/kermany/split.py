"""Patient-grouped, duplicate-safe, class-stratified splits for the Kermany import.

Pure functions: no I/O. Images that share a patient, or the same bytes, or the same decoded
pixels are unioned into one group, and a group is never divided between splits: a patient
(or a copied file) on both sides of a split would leak the answer into validation.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from xray_hpo.data.manifest import CLASSES, SPLITS
from xray_hpo.errors import UserError


@dataclass(frozen=True)
class SplitItem:
    key: str  # a stable, unique name (the source path); orders groups independently of I/O
    cls: str
    patient_id: str
    source_sha256: str
    pixel_sha256: str


@dataclass(frozen=True)
class SplitPlan:
    assignment: dict[str, str]  # item key -> split; items left out of a balanced split are absent
    shortfalls: list[str]  # human-readable notes where group sizes prevented an exact count


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving keeps trees shallow
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # The smaller index wins, so the result does not depend on the order of unions.
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def group_items(items: Sequence[SplitItem]) -> list[list[SplitItem]]:
    """Union items sharing a patient id, a source hash or a pixel hash; groups sorted by key."""
    ordered = sorted(items, key=lambda item: item.key)
    forest = _UnionFind(len(ordered))
    first_seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(ordered):
        for link in (("patient", item.patient_id), ("source", item.source_sha256),
                     ("pixels", item.pixel_sha256)):
            if link in first_seen:
                forest.union(first_seen[link], index)
            else:
                first_seen[link] = index
    members: dict[int, list[SplitItem]] = defaultdict(list)
    for index, item in enumerate(ordered):
        members[forest.find(index)].append(item)
    return [members[root] for root in sorted(members)]


def balanced_quotas(total: int) -> dict[str, int]:
    """Split ``total`` evenly over the classes; the remainder goes to the first classes."""
    base, extra = divmod(total, len(CLASSES))
    return {cls: base + (1 if index < extra else 0) for index, cls in enumerate(CLASSES)}


def _fill(groups: list[list[SplitItem]], quota: int) -> tuple[list[list[SplitItem]], int]:
    """Take groups (already shuffled) that still fit into ``quota``; return them and the count."""
    taken: list[list[SplitItem]] = []
    count = 0
    for group in groups:
        if count + len(group) <= quota:
            taken.append(group)
            count += len(group)
            if count == quota:
                break
    return taken, count


def _by_class(items: Sequence[SplitItem], seed: int) -> dict[str, list[list[SplitItem]]]:
    groups = group_items(items)
    for group in groups:
        classes = {item.cls for item in group}
        if len(classes) != 1:
            # The importer drops duplicates with conflicting labels first; reaching here is a bug.
            raise AssertionError(f"group {group[0].key} mixes classes {sorted(classes)}")
    rng = random.Random(seed)
    per_class: dict[str, list[list[SplitItem]]] = {cls: [] for cls in CLASSES}
    for group in groups:
        per_class[group[0].cls].append(group)
    for cls in CLASSES:
        rng.shuffle(per_class[cls])
    return per_class


def _assign(
    plan: dict[str, str], split: str, taken: list[list[SplitItem]], pool: list[list[SplitItem]]
) -> None:
    taken_ids = {id(group) for group in taken}
    pool[:] = [group for group in pool if id(group) not in taken_ids]
    for group in taken:
        for item in group:
            plan[item.key] = split


def plan_balanced(
    items: Sequence[SplitItem], sizes: tuple[int, int, int | None], seed: int
) -> SplitPlan:
    """Equal class counts in every split: ``sizes`` = (train, val, test); test None = the most
    the smallest class still allows once train and val are filled."""
    per_class = _by_class(items, seed)
    available = {cls: sum(len(g) for g in per_class[cls]) for cls in CLASSES}
    train_size, val_size, test_size = sizes
    fixed_need = {
        cls: balanced_quotas(train_size)[cls] + balanced_quotas(val_size)[cls]
        + (balanced_quotas(test_size)[cls] if test_size is not None else 0)
        for cls in CLASSES
    }
    for cls in CLASSES:
        if available[cls] < fixed_need[cls]:
            raise SplitError(
                f"only {available[cls]} usable {cls} images, but --sizes {train_size} {val_size} "
                f"{'max' if test_size is None else test_size} needs {fixed_need[cls]}; "
                "pass smaller --sizes"
            )
    plan: dict[str, str] = {}
    shortfalls: list[str] = []
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for split, size in (("train", train_size), ("val", val_size)):
        for cls, quota in balanced_quotas(size).items():
            taken, counts[split][cls] = _fill(per_class[cls], quota)
            _assign(plan, split, taken, per_class[cls])
    if test_size is None:
        # Whole groups can overshoot; the smallest remainder is the largest balanced test set.
        per_class_test = min(sum(len(g) for g in per_class[cls]) for cls in CLASSES)
        test_quotas = dict.fromkeys(CLASSES, per_class_test)
    else:
        test_quotas = balanced_quotas(test_size)
    for cls, quota in test_quotas.items():
        taken, counts["test"][cls] = _fill(per_class[cls], quota)
        _assign(plan, "test", taken, per_class[cls])
    for split in SPLITS:
        quotas = test_quotas if split == "test" else balanced_quotas(
            train_size if split == "train" else val_size)
        for cls in CLASSES:
            if counts[split][cls] != quotas[cls]:
                shortfalls.append(
                    f"{split}/{cls}: {counts[split][cls]} of {quotas[cls]} images "
                    "(whole patient groups did not fit the quota exactly)"
                )
    return SplitPlan(plan, shortfalls)


def plan_all(
    items: Sequence[SplitItem], fractions: tuple[float, float, float], seed: int
) -> SplitPlan:
    """Every usable image: per class, val and test get their fraction, train the rest."""
    per_class = _by_class(items, seed)
    total_fraction = sum(fractions)
    plan: dict[str, str] = {}
    shortfalls: list[str] = []
    for cls in CLASSES:
        pool = per_class[cls]
        n_class = sum(len(g) for g in pool)
        for split, fraction in (("val", fractions[1]), ("test", fractions[2])):
            quota = round(n_class * fraction / total_fraction)
            taken, count = _fill(pool, quota)
            _assign(plan, split, taken, pool)
            if count != quota:
                shortfalls.append(f"{split}/{cls}: {count} of {quota} images (group sizes)")
        _assign(plan, "train", list(pool), pool)
    return SplitPlan(plan, shortfalls)


class SplitError(UserError):
    """The requested sizes cannot be met by the images found (a one-line message)."""
