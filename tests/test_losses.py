"""The disagreement loss: zero for equal maps, positive otherwise, gradient where configured."""

import pytest
import torch

from jointcap import losses


def _dist(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(-1, keepdim=True)


@pytest.mark.parametrize("kind", losses.DIVERGENCES)
def test_divergence_zero_iff_equal(kind: str) -> None:
    torch.manual_seed(0)
    p, q = _dist(torch.rand(4, 16)), _dist(torch.rand(4, 16))
    assert torch.allclose(losses.divergence(p, p, kind), torch.zeros(4), atol=1e-6)
    assert (losses.divergence(p, q, kind) > 1e-6).all()


def test_js_symmetric_and_bounded() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    js = losses.divergence(p, q, "js")
    assert torch.allclose(js, losses.divergence(q, p, "js"))
    assert torch.allclose(js, torch.log(torch.tensor(2.0)), atol=1e-5)  # maximum for disjoint supports


def test_cam_distribution_relu_and_normalised() -> None:
    cam = torch.tensor([[[-1.0, 1.0], [3.0, -2.0]]])
    p = losses.cam_distribution(cam)
    assert torch.allclose(p.sum(-1), torch.ones(1))
    assert torch.allclose(p, torch.tensor([[0.0, 0.25, 0.75, 0.0]]), atol=1e-6)
    uniform = losses.cam_distribution(-torch.ones(1, 2, 2))
    assert torch.allclose(uniform, torch.full((1, 4), 0.25))


def test_disagreement_zero_when_attention_matches_cam() -> None:
    cam = torch.rand(2, 3, 3)
    q = losses.cam_distribution(cam)
    assert float(losses.DisagreementLoss("js")(cam, q)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.DisagreementLoss("js")(cam, q.flip(-1))) > 0


@pytest.mark.parametrize(
    "grad_to,cam_grad,attn_grad", [("both", True, True), ("captioner", False, True), ("classifier", True, False)]
)
def test_gradient_goes_only_where_configured(grad_to: str, cam_grad: bool, attn_grad: bool) -> None:
    torch.manual_seed(0)
    cam = torch.rand(2, 3, 3, requires_grad=True)
    logits = torch.randn(2, 9, requires_grad=True)
    loss = losses.DisagreementLoss("js", grad_to)(cam, logits.softmax(-1))
    loss.backward()
    assert (cam.grad is not None and cam.grad.abs().sum() > 0) == cam_grad
    assert (logits.grad is not None and logits.grad.abs().sum() > 0) == attn_grad


def test_unknown_options_named_in_error() -> None:
    with pytest.raises(ValueError, match="divergence.*js"):
        losses.DisagreementLoss("hellinger")
    with pytest.raises(ValueError, match="grad_to"):
        losses.DisagreementLoss("js", "encoder")


def test_mean_attention_ignores_padding() -> None:
    alphas = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    mask = torch.tensor([[True, False, False]])
    assert torch.allclose(losses.mean_attention(alphas, mask), torch.tensor([[1.0, 0.0]]))


def test_caption_loss_ignores_pad() -> None:
    logits = torch.randn(2, 3, 7)
    targets = torch.tensor([[4, 5, 0], [6, 0, 0]])
    full = losses.caption_loss(logits, targets, pad_id=0)
    by_hand = torch.nn.functional.cross_entropy(logits[targets != 0], targets[targets != 0])
    assert torch.allclose(full, by_hand)


def test_doubly_stochastic_zero_for_uniform_coverage() -> None:
    uniform = torch.full((1, 4, 8), 1 / 8)
    assert float(losses.doubly_stochastic(uniform, torch.ones(1, 4, dtype=torch.bool))) == pytest.approx(0.0, abs=1e-6)
    peaked = torch.zeros(1, 4, 8)
    peaked[..., 0] = 1.0
    assert float(losses.doubly_stochastic(peaked, torch.ones(1, 4, dtype=torch.bool))) > 0.5


def test_warmup() -> None:
    assert losses.warmup(2.0, 0.0, 2.0) == 0.0
    assert losses.warmup(2.0, 1.0, 2.0) == 1.0
    assert losses.warmup(2.0, 5.0, 2.0) == 2.0
    assert losses.warmup(2.0, 0.0, 0.0) == 2.0
