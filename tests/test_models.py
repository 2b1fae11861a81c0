"""Shapes, the CAM's definition, and decoding equivalences of the joint model."""

import pytest
import torch

from jointcap.metrics.correctness import repeats_ngram
from jointcap.models.captioner import AttentionCaptioner
from jointcap.models.encoder import Encoder
from jointcap.models.joint import JointModel

B, K, V = 3, 5, 40


@pytest.fixture(scope="module")
def model() -> JointModel:
    torch.manual_seed(0)
    return JointModel(
        K,
        V,
        encoder={"stage": 3, "output_stride": 8},
        embedding={"dim": 32},
        captioner={"embed_dim": 16, "hidden_dim": 32, "attn_dim": 16},
    ).eval()


def test_shapes(model: JointModel) -> None:
    images, tokens = torch.randn(B, 3, 64, 64), torch.randint(4, V, (B, 7))
    out = model(images, tokens)
    assert out.emb.shape == (B, 32, 8, 8)  # 8×8 locations at 64 px: fine enough for parts
    assert out.class_logits.shape == (B, K)
    assert out.word_logits.shape == (B, 6, V)
    assert out.alphas.shape == (B, 6, 64)
    assert torch.allclose(out.alphas.sum(-1), torch.ones(B, 6), atol=1e-5)


@pytest.mark.parametrize(
    "name,stage,stride,size,expect",
    [
        ("resnet18", 3, 8, 64, 8),
        ("resnet18", 4, 16, 224, 14),
        ("resnet18", 4, 32, 448, 14),
        ("resnet50", 4, 16, 224, 14),
    ],
)
def test_encoder_resolution(name: str, stage: int, stride: int, size: int, expect: int) -> None:
    enc = Encoder(name, None, stage, stride).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, size, size)).shape[-2:] == (expect, expect)


def test_encoder_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        Encoder("vgg99")
    with pytest.raises(ValueError, match="output_stride"):
        Encoder("resnet18", None, 4, 12)
    with pytest.raises(ValueError, match="cannot reach"):
        Encoder("resnet18", None, 1, 8)


def test_cam_is_classifier_weights_applied_by_hand(model: JointModel) -> None:
    emb = torch.rand(B, 32, 8, 8)
    classes = torch.tensor([0, 3, 4])
    cam = model.cam(emb, classes)
    assert model.classifier is not None
    w, b = model.classifier.fc.weight, model.classifier.fc.bias
    for i, c in enumerate(classes):
        by_hand = (w[c][:, None, None] * emb[i]).sum(0)  # Zhou et al.'s CAM: no bias
        assert torch.allclose(cam[i], by_hand, atol=1e-5)
    # the CAM's spatial mean plus the class bias is the class logit (GAP + linear)
    logits = model.classifier(emb)
    assert torch.allclose(cam.mean((1, 2)) + b[classes], logits[torch.arange(B), classes], atol=1e-5)


def test_cam_ignores_the_class_bias(model: JointModel) -> None:
    """A bias shift changes no CAM (it would otherwise let a CAM loss flatten P for free)."""
    emb = torch.rand(B, 32, 8, 8)
    classes = torch.tensor([0, 3, 4])
    before = model.cam(emb, classes)
    with torch.no_grad():
        assert model.classifier is not None
        model.classifier.fc.bias.add_(5.0)
    assert torch.equal(model.cam(emb, classes), before)


def test_beam_one_equals_greedy(model: JointModel) -> None:
    emb = model.embed(torch.randn(4, 3, 64, 64))
    assert model.captioner is not None
    g = model.captioner.greedy(emb, max_len=12)
    b = model.captioner.beam_search(emb, beam_size=1, max_len=12)
    assert torch.equal(g.tokens, b.tokens)
    assert torch.allclose(g.alphas, b.alphas)
    assert torch.allclose(g.scores, b.scores, atol=1e-5)


@torch.no_grad()
def _sequence_logprob(cap: AttentionCaptioner, emb: torch.Tensor, seq: list[int]) -> float:
    """Log-probability of one generated sequence (up to and including EOS) under teacher forcing."""
    context, state = cap.prepare(emb)
    words, total = torch.tensor([cap.bos_id]), 0.0
    for tok in seq:
        logits, _, state = cap.step(words, context, state)
        total += float(logits.float().log_softmax(-1)[0, tok])
        if tok == cap.eos_id:
            break
        words = torch.tensor([tok])
    return total


def test_beam_search_score_is_the_log_probability_of_its_caption(model: JointModel) -> None:
    """What beam search guarantees for any beam: the score it reports is its caption's own log-probability."""
    emb = model.embed(torch.randn(2, 3, 64, 64))
    for beam in (1, 3):
        assert model.captioner is not None
        dec = model.captioner.beam_search(emb, beam_size=beam, max_len=6)
        for i in range(2):
            seq = dec.tokens[i, : int(dec.lengths[i])].tolist()
            assert dec.scores[i].item() == pytest.approx(
                _sequence_logprob(model.captioner, emb[i : i + 1], seq), abs=1e-4
            )


def test_exhaustive_beam_finds_the_most_probable_caption() -> None:
    """With a beam as wide as every sequence, beam search is exact: it returns the brute-force argmax."""
    import itertools

    torch.manual_seed(3)
    vocab, max_len = 5, 3  # ids: 0 pad, 1 unk, 2 bos, 3 eos, 4 a word
    cap = AttentionCaptioner(8, vocab, 4, 8, 4, pad_id=0, bos_id=2, eos_id=3).eval()
    emb = torch.rand(1, 8, 2, 2)
    best = max(
        (_sequence_logprob(cap, emb, list(seq)), seq)
        for seq in itertools.product(range(vocab), repeat=max_len)
        if 3 not in seq[:-1] or seq[seq.index(3) + 1 :] == (0,) * (max_len - seq.index(3) - 1)  # pad after EOS
    )
    dec = cap.beam_search(emb, beam_size=vocab**max_len, max_len=max_len)
    assert dec.scores[0].item() == pytest.approx(best[0], abs=1e-5)
    n = int(dec.lengths[0])
    assert tuple(dec.tokens[0, :n].tolist()) == best[1][:n]


def test_beam_search_batched_equals_one_at_a_time(model: JointModel) -> None:
    emb = model.embed(torch.randn(3, 3, 64, 64))
    assert model.captioner is not None
    batched = model.captioner.beam_search(emb, beam_size=3, max_len=10)
    for i in range(3):
        single = model.captioner.beam_search(emb[i : i + 1], beam_size=3, max_len=10)
        n = int(single.lengths[0])
        assert torch.equal(single.tokens[0, :n], batched.tokens[i, :n])


def test_decoding_pads_after_eos() -> None:
    torch.manual_seed(1)
    cap = AttentionCaptioner(8, 6, 4, 8, 4, eos_id=3).eval()
    with torch.no_grad():
        cap.out.bias.fill_(-10.0)
        cap.out.bias[3] = 10.0  # EOS always wins
    dec = cap.greedy(torch.rand(2, 8, 2, 2), max_len=5)
    assert dec.tokens[:, 0].tolist() == [3, 3]
    assert dec.lengths.tolist() == [1, 1]


def test_task_drops_heads() -> None:
    cls_only = JointModel(K, V, task="classifier", encoder={"stage": 2, "output_stride": 8})
    cap_only = JointModel(K, V, task="captioner", encoder={"stage": 2, "output_stride": 8})
    assert cls_only.captioner is None and cap_only.classifier is None
    with pytest.raises(RuntimeError, match="no classifier"):
        cap_only.cam(torch.rand(1, 256, 2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="model.task"):
        JointModel(K, V, task="both")


def test_gradients_reach_encoder_from_both_heads(model: JointModel) -> None:
    m = JointModel(K, V, encoder={"stage": 2, "output_stride": 8}, embedding={"dim": 16}).train()
    out = m(torch.randn(2, 3, 32, 32), torch.randint(4, V, (2, 5)))
    for loss in (out.class_logits.sum(), out.word_logits.sum()):
        m.zero_grad()
        loss.backward(retain_graph=True)
        weight = m.encoder.body[0].weight
        assert isinstance(weight, torch.Tensor) and weight.grad is not None
        assert weight.grad.abs().sum() > 0


def test_ban_repeats_bans_exactly_the_tokens_that_would_repeat_an_ngram() -> None:
    from jointcap.models.captioner import ban_repeats

    seqs = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 7, 8, 9]])  # row 0 ends in "5 6", which "7" once followed
    out = ban_repeats(torch.zeros(2, 10), seqs, 3)
    assert torch.isinf(out[0, 7]) and torch.isfinite(out[0]).sum() == 9  # only 7 is banned in row 0
    assert torch.isfinite(out[1]).all()  # "8 9" never occurred before: nothing banned
    assert torch.isinf(ban_repeats(torch.zeros(1, 10), seqs[:1], 1)[0, [5, 6, 7]]).all()  # unigrams: every word said
    assert torch.equal(ban_repeats(torch.zeros(2, 10), seqs, 0), torch.zeros(2, 10))  # 0 = off


def test_no_repeat_ngram_decoding_never_repeats_and_changes_only_looping_captions() -> None:
    """A captioner made to loop ("4 5 4 5 …") decodes without a repeated trigram under no_repeat_ngram=3, with
    greedy and beam search, and the constraint is off by default."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 8, 4, 8, 4, pad_id=0, bos_id=2, eos_id=3).eval()
    with torch.no_grad():  # a loop: the output layer prefers words 4 and 5 (and 6) whatever the state, never EOS
        cap.out.weight.zero_()
        cap.out.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, -9.0, 3.0, 3.0, 1.0, -1.0]))
    emb = torch.rand(2, 8, 2, 2)
    for decode in (lambda **kw: cap.greedy(emb, max_len=10, **kw), lambda **kw: cap.beam_search(emb, 3, 10, **kw)):
        looping, fixed = decode(), decode(no_repeat_ngram=3)
        assert any(repeats_ngram(row, 3) for row in looping.tokens.tolist())
        assert not any(
            repeats_ngram(row[: int(n)], 3) for row, n in zip(fixed.tokens.tolist(), fixed.lengths, strict=True)
        )


@pytest.mark.parametrize("stage,size,expect", [(1, 80, 20), (2, 80, 20)])
def test_encoder_output_stride_4_gives_part_sized_cells(stage: int, size: int, expect: int) -> None:
    """Stride 4: layer1's own stride, or layer2 run at stride 1 (issue 25: cells that see parts, not the bird)."""
    enc = Encoder("resnet18", None, stage, 4).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, size, size)).shape[-2:] == (expect, expect)


def test_encoder_input_scale_resizes_before_the_trunk() -> None:
    enc = Encoder("resnet18", None, 2, 8, input_scale=2.0).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 40, 40)).shape[-2:] == (10, 10)  # 80 px through stride 8


@pytest.mark.parametrize("skip_from", ["stem", "output"])
def test_skip_channels_reach_the_captioner_only(skip_from: str) -> None:
    """embedding.skip_dim: the captioner reads D + S channels; the classifier and its CAM only the D shared ones,
    so the skip gets no gradient from the class loss and the CAM is unchanged by what the skip holds."""
    torch.manual_seed(0)
    m = JointModel(
        K, V, encoder={"stage": 2, "output_stride": 8}, embedding={"dim": 16, "skip_dim": 8, "skip_from": skip_from}
    ).train()
    out = m(torch.randn(2, 3, 32, 32), torch.randint(4, V, (2, 5)))
    assert out.emb.shape[1] == 24 and out.class_logits is not None and out.word_logits is not None
    assert m.embedding.skip is not None
    skip_w = m.embedding.skip[0].weight
    assert isinstance(skip_w, torch.Tensor)
    m.zero_grad()
    out.class_logits.sum().backward(retain_graph=True)
    assert skip_w.grad is None or skip_w.grad.abs().sum() == 0
    m.zero_grad()
    out.word_logits.sum().backward()
    assert skip_w.grad is not None and skip_w.grad.abs().sum() > 0
    emb = out.emb.detach().clone()
    cam = m.cam(emb, torch.tensor([0, 1]))
    emb[:, 16:] = torch.rand_like(emb[:, 16:])
    assert torch.equal(cam, m.cam(emb, torch.tensor([0, 1])))


def _assert_decodes_alike(cap: AttentionCaptioner) -> None:
    """Greedy and beam 1 give one caption, and teacher forcing on it attends and predicts as greedy decoding did."""
    emb = torch.rand(2, 8, 2, 3)
    greedy = cap.greedy(emb, max_len=6)
    beam = cap.beam_search(emb, beam_size=1, max_len=6)
    assert torch.equal(greedy.tokens, beam.tokens)
    tokens = torch.cat([torch.full((2, 1), 2), greedy.tokens], 1)
    with torch.no_grad():
        logits, alphas = cap(emb, tokens)
    steps = int(greedy.lengths.min())
    assert torch.allclose(alphas[:, :steps], greedy.alphas[:, :steps], atol=1e-5)
    assert torch.equal(logits[:, :steps].argmax(-1), greedy.tokens[:, :steps])


def test_coverage_attention_sees_where_it_looked_and_decodes_alike() -> None:
    """captioner.coverage: the score depends on the attention already spent (so two steps with the same hidden
    state attend differently), and teacher forcing, greedy and beam 1 agree with it on."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 12, 4, 8, 4, dropout=0.0, coverage=True, pad_id=0, bos_id=2, eos_id=3).eval()
    feats = torch.rand(2, 5, 8)
    proj = cap.attention.feat(feats)
    h = torch.rand(2, 8)
    assert cap.attention.cov is not None
    with torch.no_grad():
        cap.attention.cov.weight.fill_(3.0)
        _, a0 = cap.attention(feats, proj, h, torch.zeros(2, 5))
        _, a1 = cap.attention(feats, proj, h, torch.eye(5)[[0, 1]])
    assert not torch.allclose(a0, a1)
    _assert_decodes_alike(cap)


def test_attention_with_the_word_sees_the_word_just_emitted_and_decodes_alike() -> None:
    """captioner.attend_with_word: the same state attends differently after another word (SAT's query cannot),
    and teacher forcing, greedy and beam 1 agree with it on; without it the attention has no word weights."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 12, 4, 8, 4, dropout=0.0, attend_with_word=True, pad_id=0, bos_id=2, eos_id=3).eval()
    assert AttentionCaptioner(8, 12, 4, 8, 4).attention.word is None
    feats = torch.rand(2, 5, 8)
    proj = cap.attention.feat(feats)
    h = torch.rand(2, 8)
    with torch.no_grad():
        _, a0 = cap.attention(feats, proj, h, word=cap.embed(torch.tensor([4, 4])))
        _, a1 = cap.attention(feats, proj, h, word=cap.embed(torch.tensor([5, 5])))
    assert not torch.allclose(a0, a1)
    _assert_decodes_alike(cap)


def test_deep_output_lets_the_word_read_the_context_directly_and_decodes_alike() -> None:
    """captioner.deep_output (Xu et al. eq. 7): with the LSTM blind to the context (its context inputs zeroed),
    the first word's logits still change with the features, and without the option they do not; teacher forcing,
    greedy and beam 1 agree with it on."""
    torch.manual_seed(0)
    feats = torch.rand(2, 8, 2, 3)
    other = feats.flip(0)
    tokens = torch.tensor([[2, 4, 5, 3], [2, 5, 4, 3]])
    first = {}
    for deep in (False, True):
        cap = AttentionCaptioner(8, 12, 4, 8, 4, dropout=0.0, deep_output=deep, pad_id=0, bos_id=2, eos_id=3).eval()
        with torch.no_grad():
            cap.lstm.weight_ih[:, 4:].zero_()  # the LSTM's inputs: [word (4) | context (8)]
            cap.init_h.weight.zero_(), cap.init_c.weight.zero_()  # nor does the initial state see the image
            a, _ = cap(feats, tokens)
            b, _ = cap(other, tokens)
        first[deep] = not torch.allclose(a[:, 0], b[:, 0])
        if deep:
            _assert_decodes_alike(cap)
    assert first == {False: False, True: True}
    assert AttentionCaptioner(8, 12, 4, 8, 4).out_z is None


def test_input_norm_centres_each_channel_the_captioner_reads_and_decodes_alike() -> None:
    """captioner.input_norm: in training the features it attends over have mean 0 and unit variance per channel
    whatever the map's offset and scale (a ReLU map's channel means dwarf small colour differences); in eval the
    running statistics serve, and teacher forcing, greedy and beam 1 agree."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 12, 4, 8, 4, dropout=0.0, input_norm=True, pad_id=0, bos_id=2, eos_id=3)
    emb = 5.0 + 0.1 * torch.rand(4, 8, 2, 3)  # (B, D, h, w): large mean, small spread
    (feats, _), _ = cap.prepare(emb)  # (B, L, D)
    flat = feats.reshape(-1, 8)
    assert torch.allclose(flat.mean(0), torch.zeros(8), atol=1e-4)
    assert torch.allclose(flat.var(0, unbiased=False), torch.ones(8), atol=3e-2)
    (plain, _), _ = AttentionCaptioner(8, 12, 4, 8, 4).prepare(emb)
    assert torch.allclose(plain, emb.flatten(2).transpose(1, 2))  # off by default: the map as it is
    _assert_decodes_alike(cap.eval())


def test_stem_skip_reads_colour_the_output_map_is_given_no_say_in() -> None:
    """skip_from=stem: the skip is the stem map pooled to the grid, so it changes with the image's colour even
    where the encoder's output is held fixed (the skip does not pass through layer1+)."""
    torch.manual_seed(0)
    m = JointModel(K, V, encoder={"stage": 2, "output_stride": 8}, embedding={"dim": 8, "skip_dim": 4}).eval()
    images = torch.rand(1, 3, 32, 32)
    out, stem = m.encoder.forward_with_stem(images)
    assert stem.shape == (1, 64, 8, 8) and out.shape[-2:] == (4, 4)
    with torch.no_grad():
        a = m.embedding(out, stem)
        b = m.embedding(out, stem + 1.0)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.equal(a[:, 8:], b[:, 8:])
    with pytest.raises(ValueError, match="skip_from"):
        JointModel(K, V, embedding={"skip_dim": 4, "skip_from": "pixels"})
