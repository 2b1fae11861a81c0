"""Supervised word attention (model.loss.part_attention): which step names which part, the loss, the data it needs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jointcap.config import ConfigError, validate
from jointcap.data import part_words
from jointcap.data.datamodule import JointDataModule
from jointcap.data.synthetic_hard import HardSyntheticSource
from jointcap.data.tokenizer import Tokenizer, clean_word
from jointcap.lit_module import JointCaptionModule
from jointcap.training import part_attention
from jointcap.training.part_attention import PartMasksUnavailableError
from tests.test_config_errors import _compose

PARTS = {"crown": 0, "wings": 1, "tail": 2}
ATTRS = frozenset({"red", "blue", "striped", "black", "long"})


def test_each_word_names_its_part_or_the_part_it_describes() -> None:
    words = "this bird has a red crown and blue striped wings the tail is long".split()
    assert part_words.word_parts(words, PARTS, ATTRS) == [-1, -1, -1, -1, 0, 0, -1, 1, 1, 1, -1, 2, -1, -1]
    # "long" follows its noun: not paired; "blue" is 2 words before "wings": paired (window 3), 4 words is not
    assert part_words.described_parts("red a b c crown".split(), PARTS, ATTRS) == []
    assert part_words.described_parts("red a crown".split(), PARTS, ATTRS) == [(0, 2, 0)]


def test_token_parts_cover_every_piece_of_a_naming_word() -> None:
    caps = [f"this bird has a {c} crown and {w} striped wings" for c in ("red", "blue") for w in ("black", "blue")] * 30
    tok = Tokenizer.train(caps, vocab_size=60)
    row = np.array([tok.encode("this bird has a red crown and black striped wings", 24)])
    out = part_words.token_parts(tok, row, PARTS, ATTRS)
    words = tok.word_steps(row[0].tolist())
    want = [-1, -1, -1, -1, 0, 0, -1, 1, 1, 1]
    for (_, steps), p in zip(words, want, strict=True):
        assert (out[0, steps] == p).all()
    named = {t for (_, steps), p in zip(words, want, strict=True) if p >= 0 for t in steps}
    assert all(out[0, t] == -1 for t in range(row.shape[1]) if t not in named)  # BOS, EOS, padding, function words


def _masks() -> torch.Tensor:
    masks = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    masks[0, 0, :4, :4] = 1  # part 0: cell (0, 0) of a 2×2 map
    masks[0, 1, 4:, :2] = 1  # part 1: half of cell (1, 0); part 2 not visible
    return masks


def test_targets_are_the_named_parts_mask_on_the_map_and_skip_what_is_not_shown() -> None:
    token_part = torch.tensor([[-1, 0, 1, 2]])
    targets, valid = part_attention.part_targets(_masks(), token_part, (2, 2))
    assert valid.tolist() == [[False, True, True, False]]
    assert torch.allclose(targets[0, 1], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(targets[0, 2], torch.tensor([0.0, 0, 1, 0]))


def test_the_loss_is_low_on_the_named_part_high_elsewhere_and_trains_the_attention() -> None:
    token_part = torch.tensor([[-1, 0, 1, 2]])
    on = torch.tensor([[[0.25] * 4, [0.97, 0.01, 0.01, 0.01], [0.01, 0.01, 0.97, 0.01], [1.0, 0, 0, 0]]])
    off = torch.tensor([[[0.25] * 4, [0.01, 0.97, 0.01, 0.01], [0.97, 0.01, 0.01, 0.01], [1.0, 0, 0, 0]]])
    low = float(part_attention.loss(on, token_part, _masks(), (2, 2)))
    assert low == pytest.approx(-np.log(0.97), rel=1e-4)  # mean over the two valid steps only
    assert float(part_attention.loss(off, token_part, _masks(), (2, 2))) > 4.0
    logits = torch.zeros(1, 4, 4, requires_grad=True)
    part_attention.loss(logits.softmax(-1), token_part, _masks(), (2, 2)).backward()
    assert logits.grad is not None
    assert logits.grad[0, 1, 0] < 0 and logits.grad[0, 2, 2] < 0  # raises attention on each named part
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 3].abs().sum() == 0  # no part, hidden part
    none = part_attention.loss(on, torch.full((1, 4), -1), _masks(), (2, 2))
    assert float(none) == 0.0


def test_training_items_carry_part_masks_and_targets_that_move_with_the_image(tmp_path: Path) -> None:
    source = HardSyntheticSource(n_classes=4, per_class=6, val_per_class=1, test_per_class=1, captions_per_image=3)
    dm = JointDataModule(source, cache_root=str(tmp_path), vocab_size=80, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.serve_class_masks()
    dm.serve_part_masks()
    train, tok = dm.datasets["train"], dm.tokenizer
    assert tok is not None
    class_parts = list(dm.info["class_parts"])
    named = 0
    for i in range(len(train)):
        item = train[(i, 7)]
        masks, token_part = item["part_masks"], item["token_part"]
        assert masks.shape[0] == len(dm.info["part_names"]) and token_part.shape == item["tokens"].shape
        assert torch.equal(masks[class_parts].amax(0), item["class_mask"])  # one flip and shift for all masks
        words = tok.word_steps(item["tokens"].tolist())
        for w, steps in words:
            w = clean_word(w)
            if w in dm.info["part_words"]:
                assert (token_part[steps] == dm.info["part_words"][w]).all()
                named += 1
    assert named > 0
    assert "part_masks" not in dm.datasets["val"][0]  # the term trains; evaluation keeps its own masks


def test_part_attention_without_masks_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in ("cub", "flowers"):
        with pytest.raises(ConfigError, match="model.loss.part_attention > 0 needs per-image part masks"):
            validate(_compose([f"data={data}", "model.loss.part_attention=1.0"]))
    validate(_compose(["data=synthetic_hard", "model.loss.part_attention=1.0"]))
    validate(_compose(["data=cub", "model.loss.part_attention=0"]))
    module = JointCaptionModule(
        encoder={"stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        loss={"part_attention": 1.0},
        num_classes=3,
        vocab_size=12,
    )
    fake = SimpleNamespace(tokenizer=None, info={}, splits={}, has_part_masks=False, source=SimpleNamespace(name="cub"))
    monkeypatch.setattr(JointCaptionModule, "datamodule", property(lambda self: fake))
    with pytest.raises(PartMasksUnavailableError, match="part_attention > 0.*cub data has none"):
        module.setup("fit")


def test_a_training_step_adds_the_term_and_its_gradient_reaches_the_attention() -> None:
    torch.manual_seed(0)
    module = JointCaptionModule(
        encoder={"stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        captioner={"embed_dim": 4, "hidden_dim": 8, "attn_dim": 4},
        loss={"part_attention": 0.5, "cam_weight": 0.0},
        num_classes=3,
        vocab_size=12,
    )
    masks = torch.zeros(2, 2, 32, 32, dtype=torch.uint8)
    masks[:, 0, :8, :8] = 1
    masks[:, 1, 16:, 16:] = 1
    batch = {
        "image": torch.randn(2, 3, 32, 32),
        "label": torch.tensor([0, 2]),
        "tokens": torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 0, 0]]),
        "index": torch.tensor([0, 1]),
        "part_masks": masks,
        "token_part": torch.tensor([[-1, 0, 0, -1, -1, -1], [-1, -1, 1, -1, -1, -1]]),
    }
    terms, _ = module._losses(batch)
    assert "parts" in terms and float(terms["parts"].detach()) > 0
    total = module._total(terms)
    without = {k: v for k, v in terms.items() if k != "parts"}
    assert float(total - module._total(without)) == pytest.approx(0.5 * float(terms["parts"]), rel=1e-5)
    terms["parts"].backward()
    captioner = module.net.captioner
    assert captioner is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in captioner.named_parameters() if "att" in n)


def test_the_grounded_preset_is_hard_cam_with_grounded_attention_teaching_the_cam() -> None:
    cam, grounded = _compose(["+experiment=hard_cam"]), _compose(["+experiment=hard_grounded"])
    validate(grounded)
    loss = grounded.model.loss
    assert loss.part_attention > 0 and loss.grad_to == "cam" and loss.cam_start_epoch > 0 and loss.cam_weight > 0
    assert grounded.model.embedding == cam.model.embedding and grounded.data == cam.data  # the same model and data
    assert cam.model.loss.part_attention == 0  # the study's presets are untouched
