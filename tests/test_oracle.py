"""The positive control: Q from the image's true class-defining part masks (model.loss.q_source=oracle)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jointcap import losses
from jointcap.config import ConfigError, validate
from jointcap.data.cache import SplitData
from jointcap.data.datamodule import CaptionedImages
from jointcap.lit_module import JointCaptionModule
from jointcap.training.oracle import OracleUnavailableError, oracle_q
from tests.test_config_errors import _compose


def test_oracle_q_is_the_class_part_mask_pooled_to_the_map_and_normalised() -> None:
    mask = torch.zeros(3, 8, 8, dtype=torch.uint8)
    mask[0, :4, :4] = 1  # all of cell (0, 0) of a 2×2 map
    mask[1, :4, :2] = 1  # half of cell (0, 0) ...
    mask[1, 4:, :] = 1  # ... and all of cells (1, 0), (1, 1): shares 8 : 16 : 16 pixels
    q, valid = oracle_q(mask, (2, 2))
    assert torch.allclose(q[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(q[1], torch.tensor([0.2, 0.0, 0.4, 0.4]))
    assert valid.tolist() == [True, True, False]  # image 2 shows no class part: left out of the loss
    assert torch.allclose(q.sum(1), torch.ones(3))


def _module(**loss) -> JointCaptionModule:
    torch.manual_seed(0)
    module = JointCaptionModule(
        encoder={"stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        captioner={"embed_dim": 4, "hidden_dim": 8, "attn_dim": 4},
        loss={"q_source": "oracle", **loss},
        num_classes=3,
        vocab_size=12,
    )
    module.net.eval()  # deterministic: no dropout, BN running stats
    return module


def _batch() -> dict[str, torch.Tensor]:
    mask = torch.zeros(2, 32, 32, dtype=torch.uint8)
    mask[0, :8, :8] = 1  # image 0's class parts: the top-left cell of the 4×4 map
    mask[1, 16:, 16:] = 1  # image 1's: the bottom-right quarter
    return {
        "image": torch.randn(2, 3, 32, 32),
        "label": torch.tensor([0, 2]),
        "tokens": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]]),
        "index": torch.tensor([0, 1]),
        "class_mask": mask,
    }


def test_the_cam_loss_pulls_the_cam_toward_the_oracle_and_trains_no_captioner_through_it() -> None:
    module, batch = _module(), _batch()
    q, _ = oracle_q(batch["class_mask"], (4, 4))
    opt = torch.optim.SGD(module.net.parameters(), lr=1e-3)
    js = []
    for step in range(5):
        terms, out = module._losses(batch)
        cam = module.net.cam(out.emb, batch["label"])
        js.append(float(losses.divergence(losses.cam_distribution(cam.detach()), q).mean()))
        # the loss is D(P, the normalised mask), not D(P, the captioner's attention)
        assert float(terms["dis"].detach()) == pytest.approx(js[-1], rel=1e-5)
        opt.zero_grad()
        terms["dis"].backward()
        if step == 0:  # the gradient reaches the CAM's side (class weights, embedding), never the captioner
            assert module.net.classifier is not None and module.net.classifier.fc.weight.grad is not None
            assert module.net.classifier.fc.weight.grad.abs().sum() > 0
            captioner = module.net.captioner
            assert captioner is not None
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in captioner.parameters())
        opt.step()
    assert all(b < a for a, b in zip(js, js[1:], strict=False)) and js[-1] < 0.9 * js[0], (
        js
    )  # every step moves P toward the class parts


def test_class_mask_is_flipped_and_shifted_with_the_image() -> None:
    """Channel 0 of each image IS its class-part mask: after augmentation they must still coincide, and serving
    masks does not change the random draws (the training images are those of a run without the oracle)."""
    rng = np.random.default_rng(0)
    n, s, parts = 4, 16, 3
    masks = (rng.random((n, parts, s, s)) < 0.3).astype(np.uint8)
    images = rng.integers(0, 255, (n, s, s, 3)).astype(np.uint8)
    images[..., 0] = masks[:, [0, 2]].max(1) * 255  # class parts 0 and 2
    split = SplitData(images, np.zeros(n, np.int64), [["a"]] * n, [str(i) for i in range(n)], masks=masks)
    tokens = np.zeros((n, 1, 4), np.int64)
    plain = CaptionedImages(split, tokens, train=True, augment=True, pad=3)
    served = CaptionedImages(split, tokens, train=True, augment=True, pad=3)
    served.class_parts = (0, 2)
    moved = 0
    for i in range(n):
        for seed in range(6):
            item = served[(i, seed)]
            assert torch.equal(item["image"][0], item["class_mask"] * 255)
            assert torch.equal(item["image"], plain[(i, seed)]["image"])
            moved += not torch.equal(item["class_mask"], torch.from_numpy(images[i, ..., 0] // 255))
    assert moved > 0  # the augmentation did move some masks
    assert "class_mask" not in plain[(0, 0)]


def test_oracle_on_data_without_masks_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in ("cub", "flowers"):
        with pytest.raises(ConfigError, match="model.loss.q_source=oracle needs per-image part masks"):
            validate(_compose([f"data={data}", "model.loss.q_source=oracle"]))
    with pytest.raises(ConfigError, match="grad_to=captioner with model.loss.q_source=oracle"):
        validate(_compose(["model.loss.q_source=oracle", "model.loss.grad_to=captioner"]))
    validate(_compose(["data=synthetic_hard", "model.loss.q_source=oracle"]))  # masks there: accepted
    module = _module()
    fake = SimpleNamespace(tokenizer=None, info={}, splits={}, has_part_masks=False, source=SimpleNamespace(name="cub"))
    monkeypatch.setattr(JointCaptionModule, "datamodule", property(lambda self: fake))
    with pytest.raises(OracleUnavailableError, match="q_source=oracle.*cub data has none"):
        module.setup("fit")
