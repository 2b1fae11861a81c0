"""Issue 26 (points 2, 6, 7, 8) and 29.7: checkpoints, predict inputs and options from strangers.

A checkpoint is untrusted input: it may name a model, never make the machine download, exhaust memory or
answer `probability nan`. predict never replaces a user's file, streams its results, and shows the image the
model saw. Every refusal is a named error (a CheckpointError / UserError the CLI prints with exit 2).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from jointcap import cli, predict
from jointcap.analysis.report import checkpoint_epoch
from jointcap.config import ConfigError, validate
from jointcap.data.realdata import ImageDecodeError
from jointcap.data.tokenizer import Tokenizer, TokenizerError
from jointcap.lit_module import JointCaptionModule
from jointcap.runtime import checkpoint
from jointcap.runtime.checkpoint import CheckpointError, CheckpointSaveError, atomic_torch_save, load_module
from tests.conftest import ROOT

CAPTIONS = ["a red bird with blue wings", "this bird has a red crown", "a small blue bird", "the wings are red"] * 4
SIZE = 32


def _checkpoint(**changes: Any) -> dict[str, Any]:
    """A tiny jointcap checkpoint dict (synthetic-trained, 3 classes); `changes` replace hyper-parameters."""
    tok = Tokenizer.train(CAPTIONS, vocab_size=40)
    m = JointCaptionModule(
        encoder={"name": "resnet18", "weights": None, "stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        captioner={"embed_dim": 8, "hidden_dim": 8, "attn_dim": 8},
        decode={"max_len": 8, "test_beam_size": 1},
        num_classes=3,
        vocab_size=tok.vocab_size,
    )
    hparams = {**dict(m.hparams), **changes}
    info = {"name": "synthetic", "class_names": ["red", "blue", "green"], "image_size": SIZE}
    return {
        "epoch": 2,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": m.state_dict(),
        "hyper_parameters": hparams,
        "jointcap": {"tokenizer": tok.model_proto, "info": info, "image_size": SIZE},
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(_checkpoint(), path)
    return path


def _save(tmp_path: Path, ck: dict[str, Any], name: str = "x.ckpt") -> Path:
    torch.save(ck, tmp_path / name)
    return tmp_path / name


# -- checkpoints (issue 26 points 6 and 8) ------------------------------------------------------------
def test_a_good_checkpoint_loads(ckpt: Path) -> None:
    module = load_module(ckpt)
    assert module.hparams["num_classes"] == 3 and module.tokenizer is not None and not module.training


@pytest.mark.parametrize("content", ["hello world\n", "exception\n", "{not: a checkpoint}"])
def test_a_text_file_as_checkpoint_is_named(tmp_path: Path, content: str) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text(content)  # main: KeyError: 101 / IndexError: pop from empty list
    with pytest.raises(CheckpointError, match="notes.ckpt: "):
        load_module(path)


@pytest.mark.parametrize(
    "key,value",
    [
        ("decode", {"beam_size": 1, "test_beam_size": 10**6, "max_len": 8}),  # main: 22 GB, out of memory
        ("decode", {"beam_size": 1, "test_beam_size": 1, "max_len": 10**7}),  # main: > 300 s
        ("task", "everything"),
        ("num_classes", "3"),
        ("loss", {"cam_weight": float("nan")}),
    ],
)
def test_bad_hyper_parameters_are_named(tmp_path: Path, key: str, value: Any) -> None:
    path = _save(tmp_path, _checkpoint(**{key: value}))
    with pytest.raises(CheckpointError, match=f"x.ckpt: bad hyper-parameters:(.|\n)*model.{key}"):
        load_module(path)


def test_encoder_weights_in_a_checkpoint_never_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck = _checkpoint()
    ck["hyper_parameters"]["encoder"] = {**ck["hyper_parameters"]["encoder"], "weights": "IMAGENET1K_V1"}
    path = _save(tmp_path, ck)

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a checkpoint made torchvision download {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    module = load_module(path)
    weights = module.state_dict()["model.encoder.body.0.weight"]
    assert torch.equal(weights, ck["state_dict"]["model.encoder.body.0.weight"])  # from the state dict


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    ck = _checkpoint()
    ck["state_dict"]["model.classifier.fc.weight"][0, 0] = float("nan")  # main: "probability nan", exit 0
    with pytest.raises(CheckpointError, match="NaN or infinite weights in model.classifier.fc.weight"):
        load_module(_save(tmp_path, ck))


def test_a_checkpoint_of_another_shape_is_named_without_building_it(tmp_path: Path) -> None:
    ck = _checkpoint()
    ck["hyper_parameters"]["captioner"] = {"embed_dim": 8, "hidden_dim": 10**7, "attn_dim": 8}  # ~10**14 floats
    with pytest.raises(CheckpointError, match="do not fit the model its hyper-parameters describe"):
        load_module(_save(tmp_path, ck))


def test_a_corrupt_tokenizer_is_named(tmp_path: Path) -> None:
    ck = _checkpoint()
    ck["jointcap"]["tokenizer"] = b"\x00garbage, not sentencepiece"
    with pytest.raises(CheckpointError, match="x.ckpt: its tokenizer is unusable"):
        load_module(_save(tmp_path, ck))
    with pytest.raises(TokenizerError, match="cache/tok.model: not a SentencePiece"):
        Tokenizer(b"garbage", source="cache/tok.model")


def test_an_old_format_checkpoint_has_its_epoch(tmp_path: Path) -> None:
    """The legacy (pre-zip) format cannot be memory-mapped: main called it interrupted after the whole test."""
    path = tmp_path / "old.ckpt"
    torch.save(_checkpoint(), path, _use_new_zipfile_serialization=False)
    assert checkpoint_epoch(path) == 2
    assert load_module(path).hparams["num_classes"] == 3


def test_disk_full_while_saving_is_named_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, path)

    def full(obj: Any, f: Any) -> None:
        f.write(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(CheckpointSaveError, match="last.ckpt: cannot save the checkpoint.*disk is full"):
        atomic_torch_save({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left


def test_seed_beyond_numpy_range_is_a_config_error() -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"seed={2**32}"])
    with pytest.raises(ConfigError, match="seed=4294967296"):
        validate(cfg)


# -- predict's options --------------------------------------------------------------------------------
def _predict_cfg(*overrides: str) -> Any:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


def test_predict_options_are_checked_together(ckpt: Path, tmp_path: Path) -> None:
    _images(tmp_path / "in", 1)
    cfg = _predict_cfg(
        f"ckpt_path={ckpt}", f"images=[{tmp_path / 'in'}]", "beam_size=-2", "image_size=abc", "device=gpu"
    )
    with pytest.raises(cli.UserError) as err:
        predict.run(cfg, tmp_path / "out")
    for key in ("beam_size=-2", "image_size='abc'", "device='gpu'"):
        assert key in str(err.value), err.value


def test_evaluate_bool_option_given_a_string_is_refused(ckpt: Path, tmp_path: Path) -> None:
    from jointcap.evaluate import EvaluateError, evaluate

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt_path={ckpt}", "metrics.meteor=no", "beam_size=0"])
    with pytest.raises(EvaluateError) as err:
        evaluate(cfg, tmp_path / "out")  # main: "no" is truthy, METEOR ran
    assert "metrics.meteor='no': must be true or false" in str(err.value) and "beam_size=0" in str(err.value)


def test_evaluate_options_schema_matches_its_yaml() -> None:
    """EvaluateOptions checks conf/evaluate.yaml's own keys: its defaults are the YAML's."""
    import dataclasses

    from jointcap.config import EvaluateOptions

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate")
    want = dataclasses.asdict(EvaluateOptions())
    have = {k: (dict(cfg[k]) if k in ("metrics", "report") else cfg[k]) for k in want}
    assert have == want


# -- predict's files ----------------------------------------------------------------------------------
def _images(folder: Path, n: int, size: tuple[int, int] = (24, 20)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = folder / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def test_predict_never_writes_among_the_inputs(ckpt: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _images(photos, 1)
    (photos / "photo0.jpg").write_bytes((photos / "photo0.png").read_bytes())  # photo0.png is a user's file
    before = (photos / "photo0.png").read_bytes()
    for images, out in ((photos, photos), (photos / "photo0.jpg", photos), (photos, photos / "results")):
        with pytest.raises(cli.UserError, match="out_dir=.*holds the input"):
            predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{images}]"), out)
    assert (photos / "photo0.png").read_bytes() == before and not (photos / "results").exists()


def test_predict_never_replaces_a_file(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (paths := _images(tmp_path / "in", 1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo0.png").write_text("mine")
    (out / "predictions.csv").write_text("mine")
    assert predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{paths[0]}]"), out) == 0
    assert (out / "photo0.png").read_text() == "mine" and (out / "predictions.csv").read_text() == "mine"
    assert (out / "photo0-1.png").is_file() and (out / "predictions-1.csv").is_file()


def test_predict_streams_rows_as_images_are_done(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Four images two at a time; the second batch dies: the first batch's rows and figures are already there."""
    paths = _images(tmp_path / "in", 4)
    calls = []
    real = predict.explain

    def explain_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "explain", explain_once)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{tmp_path / 'in'}]", "batch_size=2"), out)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(p) for p in paths[:2]]
    assert sorted(p.name for p in out.glob("*.png")) == ["photo0.png", "photo1.png"]
    assert str(paths[1]) in capsys.readouterr().out  # printed as done


def test_predict_keeps_non_utf8_names_and_flags_synthetic_checkpoints(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    (path,) = _images(folder, 1)
    odd = Path(os.fsdecode(bytes(folder) + b"/caf\xe9\x1b[31m.png"))  # Latin-1 name with an ANSI escape
    path.rename(odd)
    out = tmp_path / "out"
    assert predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{folder}]"), out) == 0
    text = (out / "predictions.csv").read_text(encoding="utf-8")  # valid UTF-8 (main: lost, UnicodeEncodeError)
    assert "caf\\xe9\\x1b[31m.png" in text and predict.SYNTHETIC_WARNING in text
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "caf\\xe9" in printed and predict.SYNTHETIC_WARNING in printed


def test_predict_figure_carries_the_warning(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """29.7: the synthetic-data warning is drawn on every figure (red, below the panels), the flag in its title."""
    from jointcap.analysis import viz

    (path,) = _images(tmp_path / "in", 1)
    drawn: list[tuple[str, str]] = []
    real = viz.mosaic_figure

    def spy(image: Any, panels: Any, suptitle: str, **kwargs: Any) -> Any:
        drawn.append((suptitle, kwargs.get("footnote", "")))
        return real(image, panels, suptitle, **kwargs)

    monkeypatch.setattr(viz, "mosaic_figure", spy)
    predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{path}]"), tmp_path / "out")
    ((title, footnote),) = drawn
    assert footnote == f"WARNING: {predict.SYNTHETIC_WARNING}"
    assert (
        title.startswith("[LOW CONFIDENCE]") or "low confidence" not in (tmp_path / "out/predictions.csv").read_text()
    )
    fig = np.asarray(Image.open(tmp_path / "out" / "photo0.png").convert("RGB")).astype(int)
    bottom = fig[int(fig.shape[0] * 0.85) :]
    assert (np.abs(bottom - np.array([178, 34, 34])).sum(-1) < 40).sum() > 50, "the red line at the bottom"


def test_predict_figure_size_is_bounded_for_a_strip(ckpt: Path, tmp_path: Path) -> None:
    (path,) = _images(tmp_path / "in", 1, size=(1, 5000))  # 1 × 5000 px; main: a 1362 × 133853 px figure
    out = tmp_path / "out"
    predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{path}]"), out)
    with Image.open(out / "photo0.png") as fig:
        assert max(fig.size) < 4000, fig.size
    assert predict.display_size(1, 5000, 320) == (80, 320) and predict.display_size(900, 600, 300) == (300, 200)


def _exif_rotated(path: Path) -> np.ndarray:
    """A 40×20 image stored sideways with EXIF orientation 6 (display: rotate 90° clockwise); its upright pixels."""
    upright = np.zeros((40, 20, 3), dtype=np.uint8)  # (H, W): tall
    upright[:20] = (255, 0, 0)  # red top half
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what a camera writes
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    return upright


def _sixteen_bit(path: Path) -> None:
    Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16)).save(path)  # mid grey in 16 bits


def _transparent(path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)  # fully transparent black: white over white
    Image.fromarray(rgba, "RGBA").save(path)


@pytest.mark.parametrize("kind", ["exif", "16-bit", "alpha"])
def test_figure_shows_the_image_the_model_saw(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("x.jpg" if kind == "exif" else "x.png")
    {"exif": _exif_rotated, "16-bit": _sixteen_bit, "alpha": _transparent}[kind](path)
    model = predict.load_image(path, SIZE).permute(1, 2, 0).float()  # (S, S, 3)
    shown = predict.display_image(path, SIZE).permute(1, 2, 0).numpy()
    squashed = np.asarray(Image.fromarray(shown).resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
    assert float((torch.from_numpy(squashed) - model).abs().mean()) < 12, kind  # main: rotated / white / black
    if kind == "exif":
        assert shown.shape[0] > shown.shape[1]  # upright: tall


def test_a_fifo_is_skipped_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(result, fifo), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # main: blocked in open(); release it before failing
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("predict opened a FIFO and waited for a writer")
    assert isinstance(result[0], ImageDecodeError) and "not a regular file" in str(result[0])


def _catch(result: list[BaseException], path: Path) -> None:
    try:
        predict.load_image(path, SIZE)
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        result.append(e)


def test_predict_disk_full_is_named(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (path,) = _images(tmp_path / "in", 1)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict, "save_figure", full)
    with pytest.raises(cli.UserError, match="out: cannot write the results \\(No space left on device\\)"):
        predict.run(_predict_cfg(f"ckpt_path={ckpt}", f"images=[{path}]"), tmp_path / "out")


def test_a_corrupt_cached_tokenizer_is_trained_again_or_named(tmp_path: Path) -> None:
    from jointcap.data.cache import CacheError
    from jointcap.data.datamodule import JointDataModule
    from jointcap.data.synthetic import SyntheticSource

    source = SyntheticSource(n_classes=4, n_train=64, n_val=16, n_test=16)
    dm = JointDataModule(source, cache_root=str(tmp_path), vocab_size=60, num_workers=0)
    dm.prepare_data()
    good = dm.tokenizer_path.read_bytes()
    dm.tokenizer_path.write_bytes(b"\x00\x01garbage")  # main: sentencepiece's RuntimeError in setup
    with pytest.raises(CacheError, match=f"{dm.tokenizer_path.name}: not a SentencePiece"):
        dm.setup("fit")
    dm.prepare_data()  # a cache: trained again from the training captions
    assert dm.tokenizer_path.read_bytes() == good
    dm.setup("fit")
    assert dm.tokenizer is not None and dm.tokenizer.vocab_size > 4
