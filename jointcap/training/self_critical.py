"""Self-critical sequence training of the captioner (Rennie et al. 2017, with Luo 2020's baseline).

`k` captions are sampled per image, each rewarded by its CIDEr-D against the image's training references,
minus the mean reward of the image's other samples; loss = -(advantage · log p(caption)). It optimises what
greedy and beam decoding return toward the consensus of the references, which the word-level cross-entropy
does not (its most probable caption is a short, often looping one on randomly ordered reference phrases).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jointcap.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from jointcap.metrics.cider_reward import CiderReward
from jointcap.metrics.correctness import repeated_ngrams
from jointcap.models.captioner import AttentionCaptioner

Reward = Callable[[np.ndarray, Sequence[int]], np.ndarray]  # captions (M, T), training images (M,) → rewards (M,)


@dataclass
class SelfCriticalPass:
    """One self-critical pass over a batch."""

    loss: torch.Tensor  # () the captioner's policy-gradient loss
    reward: torch.Tensor  # () mean reward of the samples (logged)
    tokens: torch.Tensor  # (B·k, T) the sampled captions, image-major, pad after EOS
    alphas: torch.Tensor  # (B·k, T, L) the attention at each sampled word


def first_epoch(max_epochs: int, scst_epochs: float) -> int | None:
    """The first of the last `scst_epochs` epochs of `max_epochs` (None: no self-critical phase)."""
    return math.ceil(max_epochs - scst_epochs) if scst_epochs > 0 else None


def in_phase(epoch: int, max_epochs: int, scst_epochs: float) -> bool:
    """Whether `epoch` is one of the last `scst_epochs` epochs of `max_epochs` (0 = never)."""
    first = first_epoch(max_epochs, scst_epochs)
    return first is not None and epoch >= first


class RepetitionPenalised:
    """A caption reward minus `weight` × the caption's repeated trigrams (a repetition-aware reward).

    CIDEr-D clips each n-gram's count at the references', so "a yellow head, a yellow head" loses little against
    the references that name the head once; the penalty makes every loop cost the same fixed amount.
    """

    def __init__(self, base: CiderReward, weight: float, n: int = 3) -> None:
        self.base, self.weight, self.n = base, weight, n

    def __call__(self, hyps: np.ndarray, images: Sequence[int]) -> np.ndarray:
        """Rewards (M,) of captions hyps (M, T) for training images (M,)."""
        repeats = np.array([repeated_ngrams(self.base.words(h), self.n) for h in hyps], dtype=np.float64)
        return self.base(hyps, images) - self.weight * repeats


def reward(train_tokens: np.ndarray, repeat_penalty: float = 0.0) -> Reward:
    """The self-critical reward: CIDEr-D against the training references `train_tokens` (N, C, T), minus
    `repeat_penalty` per repeated trigram when it is > 0 (`model.loss.scst_repeat_penalty`)."""
    cider = CiderReward(train_tokens, PAD_ID, BOS_ID, EOS_ID)
    return RepetitionPenalised(cider, repeat_penalty) if repeat_penalty > 0 else cider


def leave_one_out_baseline(reward: torch.Tensor) -> torch.Tensor:
    """(B, k) rewards → each sample's baseline: the mean reward of its image's other samples."""
    k = reward.shape[1]
    return (reward.sum(1, keepdim=True) - reward) / max(1, k - 1)


def policy_loss(logp: torch.Tensor, said: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """-advantage · log p, averaged over the real tokens of the batch (logp, said (N, T); advantage (N, 1)).

    A per-token mean like the caption cross-entropy's (`losses.caption_loss`): with advantage 1 it IS the
    cross-entropy of the sampled words, so λ weighs the CAM loss against the caption loss alike in both phases.
    A sum over tokens would multiply the caption term by the captions' length in tokens.
    """
    return -(advantage * logp * said).sum() / said.sum().clamp(min=1)


def train_pass(
    cap: AttentionCaptioner,
    emb: torch.Tensor,
    indices: torch.Tensor,
    reward_of: Reward,
    k: int,
    max_len: int,
) -> SelfCriticalPass:
    """Sample `k` captions per image of `emb` (B, D, h, w), reward them against the references of dataset
    `indices` (B,), and return the policy-gradient loss with the samples and their attention.

    On-policy: the log-probabilities in the loss are those each word was sampled under, from the one forward
    pass that drew it (the captioner's dropout masks included). Re-scoring the samples in a second,
    teacher-forced pass would score them under other dropout masks than the ones that chose them.
    """
    s = cap.sample(emb, k, max_len)  # tokens, logp, alphas: (B·k, T, …), image-major
    images = indices.repeat_interleave(k).tolist()
    reward = torch.tensor(reward_of(s.tokens.cpu().numpy(), images), dtype=torch.float32, device=s.tokens.device)
    reward = reward.view(-1, k)  # (B, k)
    advantage = (reward - leave_one_out_baseline(reward)).view(-1, 1)
    said = s.tokens != cap.pad_id  # (B·k, T) the sampled words and their EOS
    loss = policy_loss(s.logp, said, advantage)
    return SelfCriticalPass(loss, reward.mean(), s.tokens, s.alphas)
