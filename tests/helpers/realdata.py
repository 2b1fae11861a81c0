"""Tiny CUB-200-2011 / Flowers-102 / Reed-captions archives in the real layouts, served over local HTTP.

Nothing here touches the network: archives are built with PIL, scipy.io.savemat and tarfile
under a temporary folder and served by `http.server` on 127.0.0.1 (port 0), which counts the
requests it answers. Its fixtures (serve, cub_files, flowers_files) are a pytest plugin (tests/conftest.py);
import the helpers explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
CUB_PER_CLASS = [4, 3, 3]
CUB_TRAIN_PER_CLASS = [3, 2, 2]  # the rest of each class is official test
CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
             "nape", "right eye", "right leg", "right wing", "tail", "throat"]  # fmt: skip
FLOWER_LABELS = [1, 2, 102]  # Oxford labels of the three fake classes (Reed: class_00001 …)
FLOWER_IMAGE_LABELS = [2, 1, 102, 1, 2, 102, 1, 2, 102, 1]  # label of image_00001 … image_00010
FLOWER_SETID = {"trnid": [2, 1, 3], "valid": [4, 5, 6], "tstid": [7, 8, 9, 10]}
ZEROSHOT_ORDER = ("train", "val", "test")  # class i of the three goes to split i


@dataclass
class FakeDataset:
    """Where the fake archives are, their md5s and what a correct cache must contain."""

    dir: Path
    md5: dict[str, str]
    captions: dict[str, list[str]] = field(default_factory=dict)  # image file name → captions
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # image file name → (w, h)
    labels: dict[str, int] = field(default_factory=dict)  # image file name → 0-based label
    boxes: dict[str, np.ndarray] = field(default_factory=dict)  # CUB: original pixels
    parts: dict[str, np.ndarray] = field(default_factory=dict)  # CUB: original pixels
    splits: dict[str, list[str]] = field(default_factory=dict)  # official split → file names


def md5_of(path: Path) -> str:
    """md5 of a file, hex."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def jpeg_bytes(size: tuple[int, int], seed: int, mode: str = "RGB") -> bytes:
    """A small noisy JPEG (modes RGB, L, CMYK, as found in the real data)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    rgb.convert(mode).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def caption_lines(stem: str, n: int = 10) -> list[str]:
    """Distinct captions naming their image, so a wrong join shows."""
    return [f"caption {i} of {stem} with a small bird" for i in range(n)]


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a regular file member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    add_bytes(tar, name, text.encode("utf-8"))


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """Write a .tar.gz/.tgz holding `members` (name → bytes)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
    return path


def reed_members(
    folder: str, captions: dict[tuple[str, str], list[str] | bytes | None], classes: list[str]
) -> dict[str, bytes]:
    """Reed's layout: `<folder>/text_c10/<class>/<stem>.txt` plus the zero-shot class lists."""
    members: dict[str, bytes] = {}
    for (cls, stem), lines in captions.items():
        if lines is None:
            continue  # "missing caption file"
        data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode("utf-8")
        members[f"{folder}/text_c10/{cls}/{stem}.txt"] = data
    for split, cls in zip(ZEROSHOT_ORDER, classes, strict=False):
        members[f"{folder}/{split}classes.txt"] = f"{cls}\n".encode()
    members[f"{folder}/trainvalclasses.txt"] = f"{classes[0]}\n{classes[1]}\n".encode()
    return members


def bad_caption(lines: list[str], kind: str | None) -> list[str] | bytes | None:
    """Spoil one caption file: 'missing', 'short' (9 lines) or 'latin1' (not UTF-8)."""
    if kind == "missing":
        return None
    if kind == "short":
        return lines[:9]
    if kind == "latin1":
        return ("\n".join(lines) + "\nun oiseau tr\u00e8s \u00e9l\u00e9gant\n").encode("latin-1")
    return lines


def cub_part_locs(w: int, h: int) -> np.ndarray:
    """15 × (x, y, visible): odd parts invisible at (0, 0) like CUB's."""
    locs = np.zeros((15, 3), np.float32)
    for k in range(0, 15, 2):
        locs[k] = [w * (k + 1) / 17, h * (15 - k) / 17, 1]
    return locs


def make_cub(directory: Path, bad: dict[str, str] | None = None) -> FakeDataset:
    """CUB_200_2011.tgz + cvpr2016_cub.tar.gz; `bad` maps an image file name to a spoil kind
    ('missing', 'short', 'latin1' captions; 'jpeg' undecodable image)."""
    bad = bad or {}
    directory.mkdir(parents=True, exist_ok=True)
    ds = FakeDataset(directory, {})
    members: dict[str, bytes] = {"attributes.txt": b"1 has_bill_shape::curved\n"}
    tables: dict[str, list[Any]] = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    reed: dict[tuple[str, str], list[str] | bytes | None] = {}
    image_id = 0
    for c, (cls, n, n_train) in enumerate(zip(CUB_CLASSES, CUB_PER_CLASS, CUB_TRAIN_PER_CLASS, strict=False)):
        species = cls.split(".", 1)[1]
        for j in range(n):
            image_id += 1
            name = f"{species}_{j + 1:04d}_{100 + image_id}.jpg"
            w, h = 40 + 8 * j + 4 * c, 30 + 6 * image_id % 17
            mode = {1: "L", 5: "CMYK"}.get(image_id, "RGB")
            data = jpeg_bytes((w, h), image_id, mode)
            if bad.get(name) == "jpeg":
                data = data[:20] + b"\x00garbage" * 8
            members[f"CUB_200_2011/images/{cls}/{name}"] = data
            box = np.array([w / 4, h / 5, w / 2, h / 2], np.float32)
            locs = cub_part_locs(w, h)
            tables["images"].append(f"{image_id} {cls}/{name}")
            tables["labels"].append(f"{image_id} {c + 1}")
            tables["split"].append(f"{image_id} {int(j < n_train)}")
            tables["boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
            tables["locs"] += [f"{image_id} {k + 1} {x:.1f} {y:.1f} {int(v)}" for k, (x, y, v) in enumerate(locs)]
            stem = Path(name).stem
            ds.captions[name] = caption_lines(stem)
            reed[(cls, stem)] = bad_caption(ds.captions[name], bad.get(name))
            ds.sizes[name], ds.labels[name] = (w, h), c
            ds.boxes[name], ds.parts[name] = np.round(box, 1), np.round(locs, 1)
            ds.splits.setdefault("trainval" if j < n_train else "test", []).append(name)
    text = {
        "images.txt": tables["images"],
        "image_class_labels.txt": tables["labels"],
        "train_test_split.txt": tables["split"],
        "bounding_boxes.txt": tables["boxes"],
        "classes.txt": [f"{i + 1} {c}" for i, c in enumerate(CUB_CLASSES)],
        "parts/parts.txt": [f"{i + 1} {p}" for i, p in enumerate(CUB_PARTS)],
        "parts/part_locs.txt": tables["locs"],
    }
    for name, lines in text.items():
        members[f"CUB_200_2011/{name}"] = ("\n".join(lines) + "\n").encode()
    write_tar(directory / "CUB_200_2011.tgz", members)
    write_tar(directory / "cvpr2016_cub.tar.gz", reed_members("cvpr2016_cub", reed, CUB_CLASSES))
    ds.md5 = {p.name: md5_of(p) for p in directory.iterdir()}
    return ds


def make_flowers(directory: Path, bad: dict[str, str] | None = None) -> FakeDataset:
    """102flowers.tgz, imagelabels.mat, setid.mat (Oxford shapes: 1×N) + cvpr2016_flowers.tar.gz."""
    from scipy.io import savemat

    bad = bad or {}
    directory.mkdir(parents=True, exist_ok=True)
    ds = FakeDataset(directory, {})
    images: dict[str, bytes] = {}
    reed: dict[tuple[str, str], list[str] | bytes | None] = {}
    for i, label in enumerate(FLOWER_IMAGE_LABELS, 1):
        name = f"image_{i:05d}.jpg"
        w, h = 36 + 5 * i, 50 - 2 * i
        data = jpeg_bytes((w, h), 1000 + i, "L" if i == 3 else "RGB")
        images[f"jpg/{name}"] = data[:20] + b"\x00garbage" * 8 if bad.get(name) == "jpeg" else data
        ds.captions[name] = caption_lines(Path(name).stem)
        reed[(f"class_{label:05d}", Path(name).stem)] = bad_caption(ds.captions[name], bad.get(name))
        ds.sizes[name], ds.labels[name] = (w, h), FLOWER_LABELS.index(label)
    write_tar(directory / "102flowers.tgz", images)
    savemat(directory / "imagelabels.mat", {"labels": np.array([FLOWER_IMAGE_LABELS], dtype=np.uint8)})
    savemat(directory / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in FLOWER_SETID.items()})
    classes = [f"class_{label:05d}" for label in FLOWER_LABELS]
    write_tar(directory / "cvpr2016_flowers.tar.gz", reed_members("cvpr2016_flowers", reed, classes))
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ds.splits[split] = [f"image_{i:05d}.jpg" for i in FLOWER_SETID[key]]
    ds.md5 = {p.name: md5_of(p) for p in directory.iterdir()}
    return ds


# ---------------------------------------------------------------- the local HTTP server


class Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        handler = functools.partial(_CountingHandler, directory=str(directory), log=self.requests)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, log: list[str], **kwargs) -> None:
        self._log = log
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._log.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Factory: `serve(directory)` starts a counting server; all are shut down at teardown."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers: list[Server] = []

    def start(directory: Path) -> Server:
        servers.append(Server(directory))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def cub_kwargs(server: Server, ds: FakeDataset, **overrides) -> dict:
    """CUBSource arguments pointing at the fake archives on `server` (captions by plain URL)."""
    return {
        "images_url": server.url("CUB_200_2011.tgz"),
        "images_md5": ds.md5["CUB_200_2011.tgz"],
        "captions_url": server.url("cvpr2016_cub.tar.gz"),
        "captions_gdrive_id": None,
        "captions_md5": ds.md5["cvpr2016_cub.tar.gz"],
        "workers": 2,
        **overrides,
    }


def flowers_kwargs(server: Server, ds: FakeDataset, **overrides) -> dict:
    """FlowersSource arguments pointing at the fake files on `server` (own .mat md5s)."""
    return {
        "images_url": server.url("102flowers.tgz"),
        "images_md5": ds.md5["102flowers.tgz"],
        "labels_url": server.url("imagelabels.mat"),
        "labels_md5": ds.md5["imagelabels.mat"],
        "setid_url": server.url("setid.mat"),
        "setid_md5": ds.md5["setid.mat"],
        "captions_url": server.url("cvpr2016_flowers.tar.gz"),
        "captions_gdrive_id": None,
        "captions_md5": ds.md5["cvpr2016_flowers.tar.gz"],
        "workers": 2,
        **overrides,
    }


@pytest.fixture(scope="session")
def cub_files(tmp_path_factory: pytest.TempPathFactory) -> FakeDataset:
    """The good fake CUB archives, built once per session (read-only for tests)."""
    return make_cub(tmp_path_factory.mktemp("cub_files"))


@pytest.fixture(scope="session")
def flowers_files(tmp_path_factory: pytest.TempPathFactory) -> FakeDataset:
    """The good fake Flowers archives, built once per session (read-only for tests)."""
    return make_flowers(tmp_path_factory.mktemp("flowers_files"))
