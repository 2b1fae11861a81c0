"""The speed features: memmaps that travel to workers by path, trimming before transfer, torch.compile."""

import os
import pickle
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jointcap.data import cache
from jointcap.lit_module import JointCaptionModule, _trim

SMALL: dict[str, Any] = {
    "encoder": {"stage": 2, "output_stride": 8},
    "embedding": {"dim": 16},
    "captioner": {"embed_dim": 8, "hidden_dim": 16, "attn_dim": 8},
    "num_classes": 4,
    "vocab_size": 30,
}


def _split(tmp_path: Path) -> cache.SplitData:
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    data = cache.SplitData(
        images,
        np.zeros(50, np.int64),
        [["a bird"]] * 50,
        [str(i) for i in range(50)],
        masks=np.ones((50, 5, 32, 32), np.uint8),
    )
    cache.write_split(tmp_path / "train", data)
    return cache.read_split(tmp_path / "train")


def test_memmapped_split_pickles_by_path(tmp_path: Path) -> None:
    """A spawned DataLoader worker receives the file name and maps it again: no copy of the images."""
    split = _split(tmp_path)
    blob = pickle.dumps(split)
    assert len(blob) < split.images.nbytes // 20
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap) and isinstance(back.masks, np.memmap)
    assert np.array_equal(back.images, split.images) and back.labels.tolist() == split.labels.tolist()


def test_in_memory_split_pickles_by_value(tmp_path: Path) -> None:
    _split(tmp_path)
    split = cache.read_split(tmp_path / "train", mmap=False)
    back = pickle.loads(pickle.dumps(split))
    assert not isinstance(back.images, np.memmap) and np.array_equal(back.images, split.images)
    view = cache.read_split(tmp_path / "train")
    view.images = view.images[:10]  # a slice of a memmap is not the whole file: pickled by value
    assert pickle.loads(pickle.dumps(view)).images.shape[0] == 10


def test_tokens_trimmed_on_the_host_only() -> None:
    module = JointCaptionModule(**SMALL)
    tokens = torch.tensor([[2, 5, 3, 0, 0, 0], [2, 6, 7, 3, 0, 0]])
    batch = module.on_before_batch_transfer({"tokens": tokens.clone(), "image": torch.zeros(2, 3, 8, 8)}, 0)
    assert batch["tokens"].tolist() == [[2, 5, 3, 0], [2, 6, 7, 3]]
    on_device = torch.zeros(2, 6, dtype=torch.long, device="meta")  # stands for an accelerator: no sync, no trim
    assert _trim(on_device) is on_device


@pytest.mark.parametrize("flag", [False, True])
def test_compile_knob_wraps_the_backbone_in_place(flag: bool) -> None:
    """`model.compile` compiles encoder + embedding lazily (state-dict keys unchanged, no cost until called)."""
    module = JointCaptionModule(**SMALL, compile=flag)
    keys = list(module.state_dict())
    module.configure_model()
    module.configure_model()  # idempotent
    compiled = [getattr(m, "_compiled_call_impl", None) is not None for m in (module.net.encoder, module.net.embedding)]
    assert compiled == [flag, flag]
    assert list(module.state_dict()) == keys


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("JOINTCAP_TEST_COMPILE"),
    reason="torch.compile's cold compile takes 40-80 s on the 2-core CPU; set JOINTCAP_TEST_COMPILE=1 to run it",
)
def test_compiled_model_trains_two_steps() -> None:
    torch.manual_seed(0)
    module = JointCaptionModule(**SMALL, optim={"scheduler": "none"}, compile=True)
    batches = [
        {
            "image": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
            "label": torch.randint(0, 4, (4,)),
            "tokens": torch.randint(4, 30, (4, 6)),
            "index": torch.arange(4),
        }
        for _ in range(2)
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(cast(Any, batches), batch_size=None))  # a list of ready batches
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_autocast_weight_cache_casts_once_and_never_goes_stale() -> None:
    """Inside Lightning's cache-less autocast, weights are cast once per step; gradients still reach them."""
    from jointcap.lit_module import autocast_weight_cache

    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # what Lightning 2.6 enters
        with autocast_weight_cache("cpu"):
            assert torch.is_autocast_cache_enabled()
            y1, y2 = lin(x), lin(x)
            (y1.float().sum() + y2.float().sum()).backward()
        assert not torch.is_autocast_cache_enabled()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    with torch.no_grad():
        lin.weight.add_(1.0)  # an optimizer step
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), autocast_weight_cache("cpu"):
        y3 = lin(x)
    assert not torch.allclose(y3.float(), y1.float())  # the new weights were cast, not a stale copy
    with autocast_weight_cache("cpu"):  # no autocast: nothing changes
        assert not torch.is_autocast_enabled("cpu")
