"""Self-critical training's pieces: the CIDEr-D reward, caption sampling and the on-policy loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jointcap.metrics.cider import cider_d
from jointcap.metrics.cider_reward import CiderReward
from jointcap.models import decoding
from jointcap.models.captioner import AttentionCaptioner
from jointcap.training import self_critical

PAD, BOS, EOS = 0, 2, 3


def _random_ids(rng: np.random.Generator, n: int, c: int, t: int) -> np.ndarray:
    out = np.zeros((n, c, t), np.int64)
    for i in range(n):
        for j in range(c):
            length = rng.integers(3, t - 2)
            out[i, j, 0], out[i, j, length + 1] = BOS, EOS
            out[i, j, 1 : length + 1] = rng.integers(4, 12, length)
    return out


def test_reward_is_cider_d_when_its_corpus_is_the_scored_set() -> None:
    """With document frequencies from the same images, the reward equals the pycocoevalcap-equal CIDEr-D."""
    rng = np.random.default_rng(0)
    refs = _random_ids(rng, 30, 5, 12)
    hyps = _random_ids(rng, 30, 1, 12)[:, 0, 1:]  # generated rows carry no BOS
    reward = CiderReward(refs, PAD, BOS, EOS)
    ours = reward(hyps, range(30))
    words = lambda row: [str(t) for t in reward.words(row)]  # noqa: E731
    _, expected = cider_d([words(h) for h in hyps], [[words(r) for r in refs[i]] for i in range(30)])
    assert np.allclose(ours, expected, atol=1e-12)
    assert reward(refs[:1, 0, 1:], [0])[0] > reward(refs[1:2, 0, 1:], [0])[0]  # its own reference beats another's


def test_sampling_draws_from_the_model_and_pads_after_eos() -> None:
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 7, 4, 8, 4, pad_id=PAD, bos_id=BOS, eos_id=EOS).eval()
    emb = torch.rand(3, 8, 2, 2)
    samples = cap.sample(emb, k=4, max_len=6).tokens
    assert samples.shape[0] == 12 and samples.shape[1] <= 6
    for row in samples.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])
    with torch.no_grad():  # a model that puts all mass on one word samples only that word
        cap.out.bias.fill_(-30.0)
        cap.out.bias[5] = 30.0
    assert (cap.sample(emb, k=2, max_len=4).tokens == 5).all()


def test_the_loss_scores_each_word_under_the_distribution_it_was_sampled_from(monkeypatch) -> None:
    """On-policy: with dropout active, the log-probability in the policy gradient is that of the very
    distribution `torch.multinomial` drew the word from (a second, re-scoring pass would use other masks)."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 9, 4, 16, 4, dropout=0.5, pad_id=PAD, bos_id=BOS, eos_id=EOS).train()
    drawn: list[torch.Tensor] = []  # the probabilities each step sampled from, (N, V)
    real_multinomial = torch.multinomial

    def recording(probs: torch.Tensor, n: int) -> torch.Tensor:
        drawn.append(probs.detach().clone())
        return real_multinomial(probs, n)

    monkeypatch.setattr(decoding.torch, "multinomial", recording)
    emb = torch.rand(3, 8, 2, 2, requires_grad=True)
    rewards = np.arange(12, dtype=np.float64)  # distinct per sample: every advantage is non-zero
    sc = self_critical.train_pass(
        cap, emb, torch.arange(3), lambda hyps, images: rewards[: len(images)], k=4, max_len=5
    )
    tokens = sc.tokens
    said = tokens != PAD
    chosen = torch.stack([p.gather(1, tokens[:, t, None]).squeeze(1) for t, p in enumerate(drawn)], 1)  # (N, T)
    logp_drawn = torch.where(said, chosen.log(), torch.zeros(()))
    reward = torch.tensor(rewards, dtype=torch.float32).view(3, 4)
    advantage = (reward - self_critical.leave_one_out_baseline(reward)).view(-1, 1)
    expected = -(advantage * logp_drawn * said).sum() / said.sum()
    assert float(sc.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    sc.loss.backward()  # the loss carries the sampling pass's graph
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_policy_loss_is_a_per_token_mean_like_the_caption_cross_entropy() -> None:
    """With advantage 1 the self-critical loss equals the cross-entropy of the same words (a mean over real
    tokens), so neither grows with caption length and λ weighs the CAM loss alike in both phases."""
    from jointcap import losses

    torch.manual_seed(0)
    logits = torch.randn(4, 7, 11)
    targets = torch.tensor([[5, 6, EOS, PAD, PAD, PAD, PAD]] * 2 + [[5, 6, 7, 8, 9, 10, EOS]] * 2)
    said = targets != PAD
    logp = logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(2)
    ce = losses.caption_loss(logits, targets, PAD)
    assert float(self_critical.policy_loss(logp, said, torch.ones(4, 1))) == pytest.approx(float(ce), rel=1e-6)
    flat = torch.full((2, 9), -1.0)  # every word log p = -1: one word or nine, the loss is the same
    short, long = torch.zeros(2, 9, dtype=torch.bool), torch.ones(2, 9, dtype=torch.bool)
    short[:, 0] = True
    ones = torch.ones(2, 1)
    assert float(self_critical.policy_loss(flat, short, ones)) == float(self_critical.policy_loss(flat, long, ones))


def test_self_critical_steps_raise_the_reward() -> None:
    """The policy gradient points uphill: rewarding captions that open with word 5 makes the captioner open with it."""
    torch.manual_seed(0)
    cap = AttentionCaptioner(8, 9, 4, 16, 4, dropout=0.3, pad_id=PAD, bos_id=BOS, eos_id=EOS).train()
    emb = torch.rand(4, 8, 2, 2)
    opt = torch.optim.Adam(cap.parameters(), lr=0.03)
    first_is_5 = lambda hyps, images: (hyps[:, 0] == 5).astype(np.float64)  # noqa: E731
    rewards = []
    for _ in range(40):
        sc = self_critical.train_pass(cap, emb, torch.arange(4), first_is_5, k=4, max_len=3)
        rewards.append(float(sc.reward))
        opt.zero_grad()
        sc.loss.backward()
        opt.step()
    assert np.mean(rewards[:5]) < 0.3 and np.mean(rewards[-5:]) > 0.8, rewards


def test_repeated_trigrams_are_counted_per_repeat() -> None:
    assert self_critical.repeated_ngrams([5, 6, 7, 8, 9]) == 0
    assert self_critical.repeated_ngrams([5, 6, 7, 9, 5, 6, 7]) == 1  # "a yellow head , a yellow head"
    assert self_critical.repeated_ngrams([5, 5, 5, 5, 5]) == 2  # a loop on one word: 3 trigrams, 2 repeats
    assert self_critical.repeated_ngrams([5, 6, 5, 6], n=2) == 1


def test_the_repetition_penalty_lowers_a_looping_caption_by_its_weight_per_repeat() -> None:
    """model.loss.scst_repeat_penalty=w: CIDEr-D minus w per repeated trigram; 0 leaves CIDEr-D itself."""
    rng = np.random.default_rng(1)
    refs = _random_ids(rng, 4, 5, 12)
    hyps = np.array([[5, 6, 7, 9, 5, 6, 7, EOS, PAD], [5, 6, 7, 8, 9, 10, 11, EOS, PAD]])
    cider = self_critical.reward(refs)
    assert isinstance(cider, CiderReward)
    penalised = self_critical.reward(refs, repeat_penalty=0.5)
    plain, with_penalty = cider(hyps, [0, 1]), penalised(hyps, [0, 1])
    assert with_penalty[0] == pytest.approx(plain[0] - 0.5) and with_penalty[1] == pytest.approx(plain[1])
