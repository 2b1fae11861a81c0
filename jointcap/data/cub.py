"""CUB-200-2011 with Reed et al. (2016) captions, as a `Source` of the decode-once cache.

Files under `root` (any may be provided by hand; the extracted folders are enough):
  CUB_200_2011.tgz → CUB_200_2011/ (images/, images.txt, classes.txt, image_class_labels.txt,
                      train_test_split.txt, bounding_boxes.txt, parts/parts.txt, parts/part_locs.txt)
  cvpr2016_cub.tar.gz → cvpr2016_cub/ (text_c10/<NNN.Class_Name>/<image stem>.txt, *classes.txt)
Splits: `official` = the official train/test split, with a seeded validation set carved from
train (stratified by class, `val_fraction` of each class, at least one image per class when
the fraction is positive); `zeroshot` = Reed's class-disjoint train/val/test classes (labels
stay indices over all 200 classes: this split serves captioning, not classification).
Boxes (N,4 xywh) and part locations (N,15,3 x,y,visible) are cached in cached pixels.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jointcap.data import realdata
from jointcap.data.captions import TEXT_FOLDER, join_captions, read_class_list
from jointcap.data.download import DataFileError, Remote, default_root, ensure_extracted, expand_root, gather_missing

VERSION = 1  # bump whenever the cached content for the same arguments changes
SPLIT_MODES = ("official", "zeroshot")

IMAGES_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
IMAGES_MD5 = "97eceeb196236b17998738112f37df78"
CAPTIONS_GDRIVE_ID = "0B0ywwgffWnLLZW9uVHNjb2JmNlE"


@dataclass
class CUBTables:
    """The parsed text files of CUB_200_2011/, indexed by image id."""

    class_folders: list[str]  # by 0-based label
    images: dict[int, str]  # id → relative path under images/
    labels: dict[int, int]  # id → 0-based label
    is_train: dict[int, bool]
    boxes: dict[int, np.ndarray]  # id → (4,) x, y, w, h in original pixels
    parts: dict[int, np.ndarray]  # id → (P, 3) x, y, visible in original pixels
    part_names: list[str]


def read_rows(path: Path, ncols: int, maxsplit: int = -1) -> list[list[str]]:
    """Split a whitespace table into rows of at least `ncols` fields; errors name file and line."""
    if not path.is_file():
        raise DataFileError(
            f"{path}: missing (is the CUB_200_2011 folder complete? delete it to extract it again from the archive)"
        )
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=maxsplit) if maxsplit > 0 else line.split()
        if len(fields) < ncols:
            raise DataFileError(f"{path}:{number}: expected {ncols} fields, got {line!r}")
        rows.append(fields)
    return rows


def _lookup(table: dict, key: int, path: Path):
    try:
        return table[key]
    except KeyError:
        raise DataFileError(f"{path}: no entry for image id {key}") from None


def read_tables(folder: Path) -> CUBTables:
    """Parse images, classes, labels, split, boxes and part locations of an extracted CUB folder."""
    class_rows = read_rows(folder / "classes.txt", 2)
    class_ids = sorted(int(r[0]) for r in class_rows)
    index = {cid: i for i, cid in enumerate(class_ids)}
    names = {int(r[0]): r[1] for r in class_rows}
    images = {int(r[0]): r[1] for r in read_rows(folder / "images.txt", 2)}
    labels = {int(r[0]): index[int(r[1])] for r in read_rows(folder / "image_class_labels.txt", 2)}
    is_train = {int(r[0]): r[1] == "1" for r in read_rows(folder / "train_test_split.txt", 2)}
    boxes = {int(r[0]): np.array(r[1:5], np.float32) for r in read_rows(folder / "bounding_boxes.txt", 5)}
    part_rows = read_rows(folder / "parts" / "parts.txt", 2, maxsplit=1)
    part_names = [r[1].strip() for r in sorted(part_rows, key=lambda r: int(r[0]))]
    parts: dict[int, np.ndarray] = defaultdict(lambda: np.zeros((len(part_names), 3), np.float32))
    for r in read_rows(folder / "parts" / "part_locs.txt", 5):
        parts[int(r[0])][int(r[1]) - 1] = [float(r[2]), float(r[3]), float(r[4])]
    return CUBTables([names[c] for c in class_ids], images, labels, is_train, boxes, dict(parts), part_names)


def val_count(n: int, fraction: float) -> int:
    """Images of one class moved to validation: round(n·fraction), ≥ 1 if fraction > 0, < n."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def stratified_split(records: list[realdata.Record], fraction: float, seed: int) -> tuple[list, list]:
    """Split `records` into (train, val), the same fraction of every class, reproducibly by `seed`."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_label[r.label].append(i)
    val: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label]
        val.update(members[j] for j in rng.permutation(len(members))[: val_count(len(members), fraction)])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


class CUBSource:
    """CUB-200-2011 + Reed captions → cache; see the module docstring for files and splits."""

    name = "cub"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        image_size: int = 224,
        download: bool = True,
        split: str = "official",
        val_fraction: float = 0.1,
        seed: int = 0,
        skip_bad: bool = False,
        min_captions: int = 10,
        images_url: str | None = IMAGES_URL,
        images_md5: str | None = IMAGES_MD5,
        images_archive: str = "CUB_200_2011.tgz",
        images_folder: str = "CUB_200_2011",
        captions_url: str | None = None,
        captions_gdrive_id: str | None = CAPTIONS_GDRIVE_ID,
        captions_md5: str | None = None,
        captions_archive: str = "cvpr2016_cub.tar.gz",
        captions_folder: str = "cvpr2016_cub",
        workers: int | None = None,
    ) -> None:
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
        realdata.check_arguments(
            "CUBSource",
            image_size=image_size,
            download=download,
            skip_bad=skip_bad,
            min_captions=min_captions,
            seed=seed,
            workers=workers,
        )
        if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
            raise ValueError(f"CUBSource: val_fraction must be a number in [0, 1), got {val_fraction!r}")
        self.root = expand_root(root) if root is not None else default_root()
        self.image_size, self.download, self.split = int(image_size), download, split
        self.val_fraction, self.seed, self.skip_bad, self.min_captions = (
            float(val_fraction),
            int(seed),
            skip_bad,
            min_captions,
        )
        self.images = Remote(images_archive, images_md5, images_url)
        self.images_folder = images_folder
        self.captions = Remote(captions_archive, captions_md5, captions_url, captions_gdrive_id)
        self.captions_folder = captions_folder
        self.workers = workers

    def cache_key(self) -> str:
        """Names the cache folder: everything that changes the cached content, not the root.

        `skip_bad` is part of it (a cache missing skipped images must not serve a run that wants
        them all), and so is a digest of which files are read (names, folders, md5s).
        """
        files = realdata.files_digest(self.images, self.images_folder, self.captions, self.captions_folder)
        return (
            f"cub-{self.split}-s{self.image_size}-val{self.val_fraction:g}-seed{self.seed}"
            f"-min{self.min_captions}-skip{int(self.skip_bad)}-{files}-v{VERSION}"
        )

    def prepare_files(self) -> tuple[Path, Path]:
        """Fetch/verify/extract what is missing; return the CUB and the Reed caption folders."""
        self.root.mkdir(parents=True, exist_ok=True)
        cub, reed = gather_missing(  # every missing file named at once
            lambda: ensure_extracted(self.images, self.root / self.images.filename, self.images_folder, self.download),
            lambda: ensure_extracted(
                self.captions, self.root / self.captions.filename, self.captions_folder, self.download
            ),
        )
        return cub, reed

    def records(self, cub: Path, reed: Path) -> tuple[CUBTables, list[realdata.Record], list]:
        """Every image with label, captions, box and parts (bad caption files raise or are skipped)."""
        tables = read_tables(cub)
        pairs = [(Path(rel).parent.name, Path(rel).name) for rel in tables.images.values()]
        captions, skipped = join_captions(reed / TEXT_FOLDER, pairs, self.min_captions, self.skip_bad)
        records = []
        for image_id, rel in tables.images.items():
            key = Path(rel).name
            if key not in captions:
                continue
            records.append(
                realdata.Record(
                    key=key,
                    path=cub / "images" / rel,
                    label=_lookup(tables.labels, image_id, cub / "image_class_labels.txt"),
                    captions=captions[key],
                    box=_lookup(tables.boxes, image_id, cub / "bounding_boxes.txt"),
                    parts=_lookup(tables.parts, image_id, cub / "parts" / "part_locs.txt"),
                )
            )
        return tables, records, skipped

    def splits(self, tables: CUBTables, records: list[realdata.Record], cub: Path, reed: Path) -> dict[str, list]:
        """Assign records to train/val/test according to `split`."""
        if self.split == "zeroshot":
            return zeroshot_splits(tables.class_folders, records, reed)
        ids = {Path(rel).name: image_id for image_id, rel in tables.images.items()}
        flags = [_lookup(tables.is_train, ids[r.key], cub / "train_test_split.txt") for r in records]
        train_pool = [r for r, f in zip(records, flags, strict=False) if f]
        train, val = stratified_split(train_pool, self.val_fraction, self.seed)
        return {"train": train, "val": val, "test": [r for r, f in zip(records, flags, strict=False) if not f]}

    def build(self, out: Path) -> None:
        """Download/extract what is missing and write the cache under `out` (rank 0 only)."""
        cub, reed = self.prepare_files()
        tables, records, skipped = self.records(cub, reed)
        info = {
            "name": self.name,
            "num_classes": len(tables.class_folders),
            "class_names": [f.split(".", 1)[-1].replace("_", " ") for f in tables.class_folders],
            "class_folders": tables.class_folders,
            "part_names": tables.part_names,
            "split": self.split,
            "image_size": self.image_size,
            "resize": "squash",
        }
        splits = self.splits(tables, records, cub, reed)
        realdata.build_cache(Path(out), splits, self.image_size, info, skipped, self.skip_bad, self.workers)


def zeroshot_splits(class_folders: list[str], records: list[realdata.Record], reed: Path) -> dict[str, list]:
    """Reed's class-disjoint split: images of trainclasses / valclasses / testclasses."""
    out = {}
    for split in ("train", "val", "test"):
        path = reed / f"{split}classes.txt"
        wanted = read_class_list(path)
        unknown = sorted(set(wanted) - set(class_folders))
        if unknown:
            raise DataFileError(f"{path}: unknown classes {unknown[:5]}")
        labels = {class_folders.index(c) for c in wanted}
        out[split] = [r for r in records if r.label in labels]
    return out
