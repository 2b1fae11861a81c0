"""data.captions_per_step (seq_per_img): k captions of each training image per step on one image embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointcap.config import validate
from jointcap.data.cache import SplitData
from jointcap.data.datamodule import CaptionedImages
from jointcap.lit_module import JointCaptionModule
from jointcap.models.joint import JointModel
from tests.test_config_errors import _compose


def _split(n: int, caps: int) -> tuple[SplitData, np.ndarray]:
    """n 8-px images with `caps` captions each; caption c of image i is the token row [2, 10 + c, 3]."""
    images = np.zeros((n, 8, 8, 3), np.uint8)
    split = SplitData(images, np.zeros(n, np.int64), [["x"] * caps] * n, [str(i) for i in range(n)])
    tokens = np.zeros((n, caps, 3), np.int64)
    tokens[..., 0], tokens[..., 2] = 2, 3
    tokens[..., 1] = 10 + np.arange(caps)
    return split, tokens


def test_items_carry_k_distinct_captions_and_one_caption_items_are_unchanged() -> None:
    split, tokens = _split(3, 5)
    one = CaptionedImages(split, tokens, train=True, captions_per_step=1)
    three = CaptionedImages(split, tokens, train=True, captions_per_step=3)
    item = three[(1, 7)]
    assert item["tokens"].shape == (3, 3)
    assert len(set(item["tokens"][:, 1].tolist())) == 3  # distinct captions while the image has enough
    assert torch.equal(three[(1, 7)]["tokens"], item["tokens"])  # a function of (index, seed)
    drawn = {int(one[(0, seed)]["tokens"][1]) for seed in range(40)}
    assert one[(0, 0)]["tokens"].shape == (3,) and drawn == set(range(10, 15))
    # the draw of k = 1 is the one it always was: torch.randint over the image's captions with the visit's seed
    assert int(one[(2, 5)]["tokens"][1]) == 10 + int(torch.randint(5, (), generator=torch.Generator().manual_seed(5)))
    many = CaptionedImages(split, tokens, train=True, captions_per_step=7)[(0, 1)]["tokens"][:, 1].tolist()
    assert sorted(set(many)) == list(range(10, 15)) and len(many) == 7  # more than it has: every caption, then again
    assert CaptionedImages(split, tokens, train=False, captions_per_step=3)[0]["tokens"].shape == (3,)  # eval: one


def test_a_step_with_k_captions_is_the_step_on_the_images_repeated_k_times() -> None:
    """The caption loss over (B, k, T) equals the one over B·k rows whose images are repeated; the class loss and Q
    stay per image (Q: the mean of its k captions' attention)."""
    torch.manual_seed(0)
    module = JointCaptionModule(
        encoder={"stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        captioner={"embed_dim": 4, "hidden_dim": 8, "attn_dim": 4},
        loss={"cam_weight": 1.0},
        num_classes=3,
        vocab_size=12,
    ).eval()  # no dropout, running BatchNorm statistics: both passes see the same network
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    tokens = torch.tensor([[[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]], [[2, 8, 9, 10, 3], [2, 4, 3, 0, 0]]])  # (B 2, k 2, T)
    with torch.no_grad():
        grouped, _ = module._losses({"image": images, "label": labels, "tokens": tokens, "index": torch.arange(2)})
        flat, out = module._losses(
            {
                "image": images.repeat_interleave(2, 0),
                "label": labels.repeat_interleave(2),
                "tokens": tokens.flatten(0, 1),
            }
        )
    assert torch.allclose(grouped["cap"], flat["cap"], atol=1e-6)
    assert torch.allclose(grouped["cls"], flat["cls"], atol=1e-6)  # each image counted once or twice alike
    assert out.alphas.shape[0] == 4
    with pytest.raises(ValueError, match="3 captions for 2 images"):
        JointModel(3, 12, encoder={"stage": 2, "output_stride": 8}, embedding={"dim": 8})(
            images, tokens[0, :, :][[0, 1, 0]]
        )


def test_the_option_is_a_data_setting() -> None:
    cfg = _compose(["data.captions_per_step=3"])
    validate(cfg)
    assert cfg.data.captions_per_step == 3 and _compose([]).data.captions_per_step == 1
