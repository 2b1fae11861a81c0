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
        losses.DisagreementLoss("js", "everything")


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


def _groups(module) -> dict[str, list[torch.nn.Parameter]]:
    net = module.net
    return {
        "encoder": list(net.encoder.parameters()),
        "embedding": list(net.embedding.parameters()),
        "classifier": [net.classifier.fc.weight],  # the class weights that make logits and CAM
        "captioner": list(net.captioner.parameters()),
    }


def _dis_grads(grad_to: str, seed: int = 0) -> tuple[dict[str, float], dict[str, list[torch.Tensor | None]]]:
    """The disagreement term's gradient norm per parameter group of a tiny joint module (eval mode: no dropout)."""
    from jointcap.lit_module import JointCaptionModule

    torch.manual_seed(seed)
    module = JointCaptionModule(
        encoder={"stage": 2, "output_stride": 8},
        embedding={"dim": 8},
        captioner={"embed_dim": 4, "hidden_dim": 8, "attn_dim": 4},
        loss={"grad_to": grad_to},
        num_classes=3,
        vocab_size=12,
    ).eval()
    module.train(True)  # the module's training flag (gradient routing on) ...
    module.net.eval()  # ... with the network deterministic (no dropout, BN running stats)
    batch = {
        "image": torch.randn(2, 3, 32, 32),
        "label": torch.tensor([0, 2]),
        "tokens": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]]),
        "index": torch.tensor([0, 1]),
    }
    terms, _ = module._losses(batch)
    module.zero_grad()
    terms["dis"].backward()
    groups = _groups(module)
    norms = {k: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None) for k, ps in groups.items()}
    grads = {k: [None if p.grad is None else p.grad.clone() for p in ps] for k, ps in groups.items()}
    return norms, grads


@pytest.mark.parametrize(
    "grad_to,trained",
    [
        ("both", {"encoder", "embedding", "classifier", "captioner"}),
        ("captioner", {"captioner"}),
        ("classifier", {"classifier"}),
        ("embedding", {"encoder", "embedding"}),
        ("cam", {"encoder", "embedding", "classifier"}),
    ],
)
def test_grad_to_trains_exactly_the_parameters_it_names(grad_to: str, trained: set[str]) -> None:
    """The disagreement loss's gradient reaches exactly the named parameter groups (the shared embedding and the
    encoder only for both/embedding; the class weights only for both/classifier)."""
    norms, _ = _dis_grads(grad_to)
    floor = 1e-7 * max(norms.values())  # a cancelled path leaves float rounding (~1e-10), not a gradient
    assert {k for k, v in norms.items() if v > floor} == trained, norms


def test_grad_to_leaves_the_named_side_its_full_gradient() -> None:
    """Cutting the other paths changes nothing on the side that trains: grad_to=captioner gives the captioner the
    gradient that `both` gives it, grad_to=classifier and cam give the class weights theirs."""
    _, both = _dis_grads("both")
    for grad_to, group in (("captioner", "captioner"), ("classifier", "classifier"), ("cam", "classifier")):
        _, one = _dis_grads(grad_to)
        for g_one, g_both in zip(one[group], both[group], strict=True):
            assert (g_one is None) == (g_both is None)
            if g_one is not None and g_both is not None:
                assert torch.allclose(g_one, g_both, atol=1e-6)


def test_cut_gradient_keeps_the_value_and_removes_only_the_paths_through_a_tensor() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = torch.tensor(3.0, requires_grad=True)
    mid = x * 2  # the path to cut
    term = (mid * y).sum() + (x**2).sum()  # x reaches the term through mid and directly
    cut = losses.cut_gradient(term, [mid])
    assert float(cut.detach()) == pytest.approx(float(term.detach()))
    cut.backward()
    assert x.grad is not None and y.grad is not None
    assert torch.allclose(x.grad, 2 * x.detach())  # only the direct path: d(x²)/dx
    assert float(y.grad) == pytest.approx(6.0)  # y is not upstream of mid: its gradient is untouched
