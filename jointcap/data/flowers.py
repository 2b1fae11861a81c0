"""Oxford Flowers-102 with Reed et al. (2016) captions, as a `Source` of the decode-once cache.

Files under `root` (torchvision's `Flowers102` layout, so a copy it downloaded is reused):
  flowers-102/102flowers.tgz → flowers-102/jpg/image_XXXXX.jpg
  flowers-102/imagelabels.mat (`labels`, 1×8189, Oxford labels 1..102)
  flowers-102/setid.mat (`trnid`, `valid`, `tstid`: 1,020 / 1,020 / 6,149 image ids)
  cvpr2016_flowers.tar.gz → cvpr2016_flowers/ (text_c10/class_NNNNN/image_XXXXX.txt, *classes.txt)
Splits: `official` = setid's trn/val/tst; `zeroshot` = Reed's class-disjoint train/val/test
classes (labels stay indices over all classes: this split serves captioning, not classification).
Labels are the Oxford labels present, sorted, renumbered from 0 (label − 1 on the full data).
URLs and md5s default to torchvision's; all of them can be overridden (mirrors, test fixtures).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jointcap.data import realdata
from jointcap.data.captions import TEXT_FOLDER, join_captions, read_class_list
from jointcap.data.download import (
    DataFileError,
    Remote,
    default_root,
    ensure_extracted,
    ensure_file,
    expand_root,
    gather_missing,
)

VERSION = 1  # bump whenever the cached content for the same arguments changes
SPLIT_MODES = ("official", "zeroshot")

URL_PREFIX = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"  # = torchvision Flowers102's
IMAGES_MD5 = "52808999861908f626f3c1f4e79d11fa"
LABELS_MD5 = "e0620be6f572b9609742df49c70aed4d"
SETID_MD5 = "a5357ecc9cb78c4bef273ce3793fc85c"
CAPTIONS_GDRIVE_ID = "0B0ywwgffWnLLZHluQm5SRkdWTDQ"
SETID_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def load_mat_vector(path: Path, key: str) -> np.ndarray:
    """Read the 1×k (or k) integer vector `key` of an Oxford .mat file; errors name the file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, squeeze_me=True)
    except (OSError, ValueError, TypeError, MatReadError) as e:
        raise DataFileError(
            f"{path}: unreadable .mat file ({type(e).__name__}: {e or 'empty file'}); delete it to download it again"
        ) from None
    if key not in mat:
        raise DataFileError(f"{path}: no variable {key!r} (found {sorted(k for k in mat if not k.startswith('__'))})")
    return np.atleast_1d(np.asarray(mat[key])).astype(np.int64).ravel()


def class_names(oxford_labels: list[int]) -> list[str]:
    """Readable names for Oxford labels (torchvision's list), else `class_NNNNN`."""
    from torchvision.datasets import Flowers102

    names = Flowers102.classes
    return [names[lab - 1] if 1 <= lab <= len(names) else f"class_{lab:05d}" for lab in oxford_labels]


def reed_folder(oxford_label: int) -> str:
    """Reed's caption folder for an Oxford label: class_00001 … class_00102."""
    return f"class_{oxford_label:05d}"


def image_name(image_id: int) -> str:
    """The file name of a 1-based Oxford image id."""
    return f"image_{image_id:05d}.jpg"


class FlowersSource:
    """Flowers-102 + Reed captions → cache; see the module docstring for files and splits."""

    name = "flowers"

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        image_size: int = 224,
        download: bool = True,
        split: str = "official",
        skip_bad: bool = False,
        min_captions: int = 10,
        folder: str = "flowers-102",
        images_url: str | None = URL_PREFIX + "102flowers.tgz",
        images_md5: str | None = IMAGES_MD5,
        labels_url: str | None = URL_PREFIX + "imagelabels.mat",
        labels_md5: str | None = LABELS_MD5,
        setid_url: str | None = URL_PREFIX + "setid.mat",
        setid_md5: str | None = SETID_MD5,
        captions_url: str | None = None,
        captions_gdrive_id: str | None = CAPTIONS_GDRIVE_ID,
        captions_md5: str | None = None,
        captions_archive: str = "cvpr2016_flowers.tar.gz",
        captions_folder: str = "cvpr2016_flowers",
        workers: int | None = None,
    ) -> None:
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
        realdata.check_arguments(
            "FlowersSource",
            image_size=image_size,
            download=download,
            skip_bad=skip_bad,
            min_captions=min_captions,
            workers=workers,
        )
        self.root = expand_root(root) if root is not None else default_root()
        self.image_size, self.download, self.split = int(image_size), download, split
        self.skip_bad, self.min_captions, self.folder = skip_bad, min_captions, folder
        self.images = Remote("102flowers.tgz", images_md5, images_url)
        self.labels = Remote("imagelabels.mat", labels_md5, labels_url)
        self.setid = Remote("setid.mat", setid_md5, setid_url)
        self.captions = Remote(captions_archive, captions_md5, captions_url, captions_gdrive_id)
        self.captions_folder = captions_folder
        self.workers = workers

    def cache_key(self) -> str:
        """Names the cache folder: all that changes the cached content (skip_bad, which files), not the root."""
        files = realdata.files_digest(
            self.images, self.labels, self.setid, self.captions, self.captions_folder, self.folder
        )
        shape = f"s{self.image_size}-min{self.min_captions}-skip{int(self.skip_bad)}"
        return f"flowers-{self.split}-{shape}-{files}-v{VERSION}"

    def prepare_files(self) -> tuple[Path, Path]:
        """Fetch/verify/extract what is missing; return the flowers-102 and the Reed caption folders."""
        base = self.root / self.folder
        base.mkdir(parents=True, exist_ok=True)
        *_, reed = gather_missing(  # every missing file named at once
            lambda: ensure_extracted(self.images, base / self.images.filename, "jpg", self.download),
            *(
                lambda r=remote: ensure_file(r, base / r.filename, self.download)
                for remote in (self.labels, self.setid)
            ),
            lambda: ensure_extracted(
                self.captions, self.root / self.captions.filename, self.captions_folder, self.download
            ),
        )
        return base, reed

    def split_ids(self, base: Path, labels: np.ndarray, reed: Path) -> dict[str, list[int]]:
        """1-based image ids of train/val/test according to `split`."""
        if self.split == "zeroshot":
            ids = {}
            for split in ("train", "val", "test"):
                wanted = {int(c.removeprefix("class_")) for c in read_class_list(reed / f"{split}classes.txt")}
                ids[split] = [i + 1 for i, lab in enumerate(labels) if int(lab) in wanted]
            return ids
        setid = base / self.setid.filename
        ids = {split: load_mat_vector(setid, key).tolist() for split, key in SETID_KEYS.items()}
        for split, values in ids.items():
            bad = [i for i in values if not 1 <= i <= len(labels)]
            if bad:
                raise DataFileError(f"{setid}: {SETID_KEYS[split]} has ids outside 1..{len(labels)}: {bad[:5]}")
        return ids

    def build(self, out: Path) -> None:
        """Download/extract what is missing and write the cache under `out` (rank 0 only)."""
        base, reed = self.prepare_files()
        labels = load_mat_vector(base / self.labels.filename, "labels")
        present = sorted({int(lab) for lab in labels})
        index = {lab: i for i, lab in enumerate(present)}
        ids = self.split_ids(base, labels, reed)
        wanted = [i for split in ("train", "val", "test") for i in ids[split]]
        pairs = [(reed_folder(int(labels[i - 1])), image_name(i)) for i in wanted]
        captions, skipped = join_captions(reed / TEXT_FOLDER, pairs, self.min_captions, self.skip_bad)

        def record(i: int) -> realdata.Record:
            name = image_name(i)
            return realdata.Record(name, base / "jpg" / name, index[int(labels[i - 1])], captions[name])

        splits = {s: [record(i) for i in ids[s] if image_name(i) in captions] for s in ("train", "val", "test")}
        info = {
            "name": self.name,
            "num_classes": len(present),
            "class_names": class_names(present),
            "oxford_labels": present,
            "part_names": None,
            "split": self.split,
            "image_size": self.image_size,
            "resize": "squash",
        }
        realdata.build_cache(Path(out), splits, self.image_size, info, skipped, self.skip_bad, self.workers)
