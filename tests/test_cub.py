"""CUBSource: full prepare from fake archives in the real layout, served over local HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jointcap.data import cache
from jointcap.data.captions import CaptionError
from jointcap.data.cub import CUBSource, stratified_split, val_count
from jointcap.data.download import MissingFileError
from jointcap.data.realdata import ImageDecodeError, Record
from tests.helpers.realdata import CUB_PARTS, cub_kwargs, make_cub

SIZE = 32


def _build(tmp_path: Path, server, ds, **overrides) -> Path:
    out = tmp_path / "cache" / "cub"
    CUBSource(tmp_path / "data", image_size=SIZE, **cub_kwargs(server, ds, **overrides)).build(out)
    return out


def test_build_official(serve, cub_files, tmp_path: Path) -> None:
    out = _build(tmp_path, serve(cub_files.dir), cub_files)
    assert cache.dataset_complete(out)
    splits = {s: cache.read_split(out / s) for s in cache.SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": 4, "val": 3, "test": 3}
    assert sorted(splits["train"].keys + splits["val"].keys) == sorted(cub_files.splits["trainval"])
    assert sorted(splits["test"].keys) == sorted(cub_files.splits["test"])
    assert sorted(splits["val"].labels.tolist()) == [0, 1, 2]  # stratified: one per class
    for data in splits.values():
        assert data.images.shape[1:] == (SIZE, SIZE, 3) and data.images.dtype == np.uint8
        assert data.boxes is not None and data.parts is not None
        assert data.boxes.shape == (len(data), 4) and data.parts.shape == (len(data), 15, 3)
        for i, key in enumerate(data.keys):
            assert data.labels[i] == cub_files.labels[key]
            assert data.captions[i] == cub_files.captions[key]  # 10, from the right file
            w, h = cub_files.sizes[key]
            scale = np.array([SIZE / w, SIZE / h], np.float32)
            np.testing.assert_allclose(data.boxes[i], cub_files.boxes[key] * np.tile(scale, 2), rtol=1e-5)
            np.testing.assert_allclose(data.parts[i][:, :2], cub_files.parts[key][:, :2] * scale, rtol=1e-5)
            np.testing.assert_array_equal(data.parts[i][:, 2], cub_files.parts[key][:, 2])
    info = cache.read_info(out)
    assert info["name"] == "cub" and info["num_classes"] == 3
    assert info["class_names"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert info["part_names"] == CUB_PARTS and info["skipped"]["count"] == 0


def test_image_content_is_the_squashed_original(serve, cub_files, tmp_path: Path) -> None:
    from PIL import Image

    out = _build(tmp_path, serve(cub_files.dir), cub_files)
    data = cache.read_split(out / "test")
    key = data.keys[0]
    folder = tmp_path / "data" / "CUB_200_2011" / "images"
    original = Image.open(next(folder.rglob(key))).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    assert np.abs(np.asarray(original, np.int16) - data.images[0]).mean() < 6


def test_second_build_fetches_and_extracts_nothing(serve, cub_files, tmp_path: Path, monkeypatch) -> None:
    server = serve(cub_files.dir)
    _build(tmp_path, server, cub_files)
    assert len(server.requests) > 0
    served = len(server.requests)
    from jointcap.data import download

    monkeypatch.setattr(download, "safe_extract", lambda *a: pytest.fail("extracted again"))
    source = CUBSource(tmp_path / "data", image_size=SIZE + 8, **cub_kwargs(server, cub_files))
    source.build(tmp_path / "cache" / source.cache_key())
    assert len(server.requests) == served
    # With the extracted folders gone, the verified archives are re-extracted, not re-fetched.
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "data" / "CUB_200_2011")
    _build(tmp_path, server, cub_files)
    assert len(server.requests) == served


def test_download_false_with_nothing_present(cub_files, tmp_path: Path) -> None:
    source = CUBSource(tmp_path / "data", image_size=SIZE, download=False)
    with pytest.raises(MissingFileError) as err:
        source.build(tmp_path / "out")
    msg = str(err.value)
    for part in ("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                 "97eceeb196236b17998738112f37df78", str(tmp_path / "data" / "CUB_200_2011.tgz")):  # fmt: skip
        assert part in msg


def test_offline_extracted_folders_are_enough(serve, cub_files, tmp_path: Path) -> None:
    server = serve(cub_files.dir)
    _build(tmp_path, server, cub_files)
    for archive in (tmp_path / "data").glob("*gz*"):
        archive.unlink()
    source = CUBSource(tmp_path / "data", image_size=SIZE, download=False, images_url=None, captions_gdrive_id=None)
    source.build(tmp_path / "out2")
    assert cache.dataset_complete(tmp_path / "out2")


def test_zeroshot_split(serve, cub_files, tmp_path: Path) -> None:
    out = _build(tmp_path, serve(cub_files.dir), cub_files, split="zeroshot")
    for label, split in enumerate(cache.SPLITS):
        data = cache.read_split(out / split)
        assert set(data.labels.tolist()) == {label} and len(data) == [4, 3, 3][label]
    assert cache.read_info(out)["num_classes"] == 3


BAD = {
    "missing": (CaptionError, "caption file missing"),
    "short": (CaptionError, "9 caption lines"),
    "latin1": (CaptionError, "not valid UTF-8"),
    "jpeg": (ImageDecodeError, "cannot decode image"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_names_the_file_and_leaves_no_cache(serve, tmp_path: Path, kind: str) -> None:
    victim = "Laysan_Albatross_0002_106.jpg"
    ds = make_cub(tmp_path / "files", bad={victim: kind})
    error, text = BAD[kind]
    with pytest.raises(error, match=text) as err:
        _build(tmp_path, serve(ds.dir), ds)
    assert Path(victim).stem in str(err.value)
    out = tmp_path / "cache" / "cub"
    assert not cache.dataset_complete(out)
    assert not any(cache.is_complete(out / s) for s in cache.SPLITS)
    assert not [p for p in out.iterdir() if p.name.startswith(".")] if out.exists() else True


@pytest.mark.parametrize("kind", sorted(BAD))
def test_skip_bad_skips_and_counts(serve, tmp_path: Path, kind: str, caplog) -> None:
    victim = "Laysan_Albatross_0002_106.jpg"
    ds = make_cub(tmp_path / "files", bad={victim: kind})
    out = _build(tmp_path, serve(ds.dir), ds, skip_bad=True)
    keys = [k for s in cache.SPLITS for k in cache.read_split(out / s).keys]
    assert len(keys) == 9 and victim not in keys
    skipped = cache.read_info(out)["skipped"]
    assert skipped["count"] == 1 and skipped["items"][0]["key"] == victim
    assert "skipped 1 bad image" in caplog.text and victim in caplog.text


def test_wrong_images_md5(serve, cub_files, tmp_path: Path) -> None:
    with pytest.raises(
        Exception, match="CUB_200_2011.tgz: md5 mismatch, expected 0{32}, got " + cub_files.md5["CUB_200_2011.tgz"]
    ):
        _build(tmp_path, serve(cub_files.dir), cub_files, images_md5="0" * 32)
    assert not list((tmp_path / "data").glob("CUB_200_2011*"))


def test_cache_key_tracks_content_not_root() -> None:
    a = CUBSource("/x", image_size=224)
    assert a.cache_key() == CUBSource("/elsewhere", image_size=224).cache_key()
    others = [
        CUBSource("/x", image_size=448),
        CUBSource("/x", split="zeroshot"),
        CUBSource("/x", val_fraction=0.2),
        CUBSource("/x", seed=1),
    ]
    assert len({a.cache_key(), *(o.cache_key() for o in others)}) == 5
    assert "cub" in a.cache_key()


def test_default_root_from_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOINTCAP_DATA", str(tmp_path))
    assert CUBSource().root == tmp_path


def test_stratified_split_is_seeded_and_per_class() -> None:
    records = [Record(f"{c}-{i}", Path("x"), c, []) for c in range(5) for i in range(30)]
    train, val = stratified_split(records, 0.1, seed=0)
    assert len(val) == 15 and len(train) == 135
    assert all(sum(r.label == c for r in val) == 3 for c in range(5))
    assert [r.key for r in stratified_split(records, 0.1, seed=0)[1]] == [r.key for r in val]
    assert [r.key for r in stratified_split(records, 0.1, seed=1)[1]] != [r.key for r in val]
    assert (val_count(1, 0.1), val_count(2, 0.1), val_count(30, 0.0)) == (0, 1, 0)


def test_config_matches_constructor() -> None:
    import inspect

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        conf = compose(config_name="config", overrides=["data=cub"]).data.source  # the schema + cub.yaml
    params = inspect.signature(CUBSource).parameters
    assert conf._target_ == "jointcap.data.cub.CUBSource"
    assert set(conf) - {"_target_"} == set(params)
    for name in set(params) - {"root"}:
        assert conf[name] == params[name].default, name


def test_truncated_captions_archive_without_md5(serve, tmp_path: Path) -> None:
    from jointcap.data.download import ArchiveError

    ds = make_cub(tmp_path / "files")
    archive = ds.dir / "cvpr2016_cub.tar.gz"
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(ArchiveError, match="cvpr2016_cub.tar.gz: truncated or unreadable"):
        _build(tmp_path, serve(ds.dir), ds, captions_md5=None)
    assert not (tmp_path / "data" / "cvpr2016_cub").exists()
    assert not (tmp_path / "cache" / "cub").exists()


def test_cache_key_tracks_skip_bad_and_the_files_read() -> None:
    """A cache built with skip_bad=true (images missing) must not serve a later run without it: other files."""
    a = CUBSource("/x")
    assert a.cache_key() != CUBSource("/x", skip_bad=True).cache_key()
    assert a.cache_key() != CUBSource("/x", captions_md5="ab" * 16).cache_key()
    assert a.cache_key() != CUBSource("/x", images_folder="CUB_v2").cache_key()
    assert a.cache_key() == CUBSource("/x", images_url="http://mirror.example/CUB_200_2011.tgz").cache_key()


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"download": "no"}, "download"),
        ({"skip_bad": "maybe"}, "skip_bad"),
        ({"min_captions": -1}, "min_captions"),
        ({"image_size": "abc"}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"val_fraction": float("nan")}, "val_fraction"),
        ({"seed": 1.5}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_constructor_refuses_bad_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"CUBSource: {key}"):
        CUBSource("/x", **kwargs)
