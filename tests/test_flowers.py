"""FlowersSource: full prepare from fake archives and .mat files in Oxford's layout, over local HTTP."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from jointcap.data import cache, flowers
from jointcap.data.captions import CaptionError
from jointcap.data.download import ChecksumError, DataFileError, MissingFileError
from jointcap.data.flowers import FlowersSource
from jointcap.data.realdata import ImageDecodeError
from tests.helpers.realdata import flowers_kwargs, make_flowers

SIZE = 24


def _build(tmp_path: Path, server, ds, **overrides) -> Path:
    out = tmp_path / "cache" / "flowers"
    FlowersSource(tmp_path / "data", image_size=SIZE, **flowers_kwargs(server, ds, **overrides)).build(out)
    return out


def test_build_official(serve, flowers_files, tmp_path: Path) -> None:
    out = _build(tmp_path, serve(flowers_files.dir), flowers_files)
    for split in cache.SPLITS:
        data = cache.read_split(out / split)
        assert data.keys == flowers_files.splits[split]  # setid order, ids → file names
        assert data.images.shape == (len(data), SIZE, SIZE, 3)
        assert data.boxes is None and data.parts is None
        for i, key in enumerate(data.keys):
            assert data.labels[i] == flowers_files.labels[key]
            assert data.captions[i] == flowers_files.captions[key]
    info = cache.read_info(out)
    assert info["num_classes"] == 3 and info["part_names"] is None and info["skipped"]["count"] == 0
    assert info["class_names"] == ["pink primrose", "hard-leaved pocket orchid", "blackberry lily"]
    assert info["oxford_labels"] == [1, 2, 102]
    folder = tmp_path / "data" / "flowers-102"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".verified")) == [
        ".jpg.extracted", "102flowers.tgz", "imagelabels.mat", "jpg", "setid.mat"]  # fmt: skip


def test_second_build_fetches_nothing(serve, flowers_files, tmp_path: Path) -> None:
    server = serve(flowers_files.dir)
    _build(tmp_path, server, flowers_files)
    served = len(server.requests)
    source = FlowersSource(tmp_path / "data", image_size=SIZE * 2, **flowers_kwargs(server, flowers_files))
    source.build(tmp_path / "cache" / source.cache_key())
    assert len(server.requests) == served
    assert cache.read_split(tmp_path / "cache" / source.cache_key() / "test").images.shape[1] == SIZE * 2


def test_zeroshot_split(serve, flowers_files, tmp_path: Path) -> None:
    out = _build(tmp_path, serve(flowers_files.dir), flowers_files, split="zeroshot")
    sizes = {s: len(cache.read_split(out / s)) for s in cache.SPLITS}
    assert sizes == {"train": 4, "val": 3, "test": 3}  # classes 1, 2, 102 of images labelled 1×4, 2×3, 102×3
    assert set(cache.read_split(out / "test").labels.tolist()) == {2}


def test_mat_checksum_is_configurable_and_checked(serve, flowers_files, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="imagelabels.mat: md5 mismatch, expected " + flowers.LABELS_MD5):
        _build(tmp_path, serve(flowers_files.dir), flowers_files, labels_md5=flowers.LABELS_MD5)
    assert not (tmp_path / "data" / "flowers-102" / "imagelabels.mat").exists()


def test_download_false_with_nothing_present(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError) as err:
        FlowersSource(tmp_path / "data", download=False).build(tmp_path / "out")
    msg = str(err.value)
    for part in (
        "102flowers.tgz",
        flowers.URL_PREFIX + "102flowers.tgz",
        flowers.IMAGES_MD5,
        str(tmp_path / "data" / "flowers-102"),
    ):
        assert part in msg


def test_gdrive_captions_offline_name_the_drive_file(serve, flowers_files, tmp_path: Path) -> None:
    import shutil

    server = serve(flowers_files.dir)
    _build(tmp_path, server, flowers_files)
    shutil.rmtree(tmp_path / "data" / "cvpr2016_flowers")
    (tmp_path / "data" / "cvpr2016_flowers.tar.gz").unlink()
    kwargs = flowers_kwargs(server, flowers_files, captions_url=None, captions_gdrive_id="0B0ywwgffWnLLZHluQm5SRkdWTDQ")
    with pytest.raises(
        MissingFileError, match=r"cvpr2016_flowers.tar.gz.*drive.google.com/uc\?id=0B0ywwgffWnLLZHluQm5SRkdWTDQ"
    ):
        FlowersSource(tmp_path / "data", image_size=SIZE, download=False, **kwargs).build(tmp_path / "out")


@pytest.mark.parametrize(
    "kind,error",
    [("short", CaptionError), ("latin1", CaptionError), ("missing", CaptionError), ("jpeg", ImageDecodeError)],
)
def test_bad_input_names_the_file(serve, tmp_path: Path, kind: str, error: type) -> None:
    ds = make_flowers(tmp_path / "files", bad={"image_00005.jpg": kind})
    with pytest.raises(error, match="image_00005"):
        _build(tmp_path, serve(ds.dir), ds)
    assert not cache.dataset_complete(tmp_path / "cache" / "flowers")


def test_skip_bad_image(serve, tmp_path: Path) -> None:
    ds = make_flowers(tmp_path / "files", bad={"image_00005.jpg": "jpeg", "image_00009.jpg": "short"})
    out = _build(tmp_path, serve(ds.dir), ds, skip_bad=True)
    assert cache.read_split(out / "val").keys == ["image_00004.jpg", "image_00006.jpg"]
    assert cache.read_split(out / "test").keys == ["image_00007.jpg", "image_00008.jpg", "image_00010.jpg"]
    assert cache.read_info(out)["skipped"]["count"] == 2


def test_defaults_match_torchvision() -> None:
    from torchvision.datasets import Flowers102

    params = inspect.signature(FlowersSource).parameters
    for key, arg in (("image", "images"), ("label", "labels"), ("setid", "setid")):
        filename, md5 = Flowers102._file_dict[key]
        assert params[f"{arg}_md5"].default == md5
        assert params[f"{arg}_url"].default == Flowers102._download_url_prefix + filename


def test_config_matches_constructor() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        conf = compose(config_name="config", overrides=["data=flowers"]).data.source  # the schema + flowers.yaml
    params = inspect.signature(FlowersSource).parameters
    assert conf._target_ == "jointcap.data.flowers.FlowersSource"
    assert set(conf) - {"_target_"} == set(params)
    for name in set(params) - {"root"}:
        assert conf[name] == params[name].default, name


def test_instantiate_from_config(monkeypatch, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    monkeypatch.setenv("JOINTCAP_DATA", str(tmp_path))
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        conf = compose(config_name="config", overrides=["data=flowers"]).data.source  # the schema + flowers.yaml
    source = instantiate(conf)
    assert isinstance(source, FlowersSource) and source.root == tmp_path
    monkeypatch.delenv("JOINTCAP_DATA")
    assert instantiate(conf).root == Path("~/.cache/jointcap").expanduser()
    assert np.isscalar(source.image_size)


def test_cache_key_tracks_skip_bad() -> None:
    assert FlowersSource("/x").cache_key() != FlowersSource("/x", skip_bad=True).cache_key()
    assert FlowersSource("/x").cache_key() == FlowersSource("/y").cache_key()


@pytest.mark.parametrize("kwargs", [{"download": "no"}, {"skip_bad": "maybe"}, {"min_captions": -1}, {"image_size": 0}])
def test_constructor_refuses_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=f"FlowersSource: {next(iter(kwargs))}"):
        FlowersSource("/x", **kwargs)


@pytest.mark.parametrize("name", ["imagelabels.mat", "setid.mat"])
def test_zero_byte_mat_names_the_file(tmp_path: Path, name: str) -> None:
    from jointcap.data.flowers import load_mat_vector

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataFileError, match=f"{name}: unreadable .mat file"):
        load_mat_vector(tmp_path / name, "labels")
