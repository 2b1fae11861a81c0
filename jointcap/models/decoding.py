"""Caption decoding for any step-wise captioner: greedy, beam search and sampling, batched over images.

A decoder is anything with the `StepDecoder` shape: `prepare(emb)` gives a per-image context (repeated per
beam or sample) and the initial recurrent state; `step(words, context, state)` gives next-word logits, the
attention over the h·w locations and the new state. Loops run over time steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

Tensors = tuple[torch.Tensor, ...]


class StepDecoder(Protocol):
    """What decoding needs of a captioner."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def prepare(self, emb: torch.Tensor) -> tuple[Tensors, Tensors]: ...

    def step(
        self, words: torch.Tensor, context: Tensors, state: Tensors
    ) -> tuple[torch.Tensor, torch.Tensor, Tensors]: ...


@dataclass
class Decoded:
    """Generated captions: token ids after BOS, padded after EOS, with per-step attention."""

    tokens: torch.Tensor  # (B, T) long, pad_id after the first EOS
    lengths: torch.Tensor  # (B,) number of tokens up to and including EOS
    alphas: torch.Tensor  # (B, T, L) attention at each step (zeros after EOS)
    scores: torch.Tensor  # (B,) total log-probability of the chosen sequence


def _repeat(xs: Tensors, k: int) -> Tensors:
    """(B, …) → (B·k, …), image-major."""
    return tuple(x.repeat_interleave(k, dim=0) for x in xs)


@torch.no_grad()
def greedy(dec: StepDecoder, emb: torch.Tensor, max_len: int = 24, no_repeat_ngram: int = 0) -> Decoded:
    """Arg-max decoding, batched over images (`no_repeat_ngram`: see `ban_repeats`)."""
    context, state = dec.prepare(emb)
    b, dev = emb.shape[0], emb.device
    words = torch.full((b,), dec.bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    tokens: list[torch.Tensor] = []
    alphas: list[torch.Tensor] = []
    scores = torch.zeros(b, device=dev)
    for _ in range(max_len):
        logits, alpha, state = dec.step(words, context, state)
        logp = logits.float().log_softmax(-1)
        if no_repeat_ngram and tokens:
            logp = ban_repeats(logp, torch.stack(tokens, 1), no_repeat_ngram)
        words = logp.argmax(-1)
        scores += torch.where(done, 0.0, logp.gather(1, words[:, None]).squeeze(1))
        words = words.masked_fill(done, dec.pad_id)
        tokens.append(words)
        alphas.append(alpha.masked_fill(done[:, None], 0.0))
        done = done | (words == dec.eos_id)
        if bool(done.all()):
            break
    return finish(torch.stack(tokens, 1), torch.stack(alphas, 1), scores, dec.eos_id, dec.pad_id)


@dataclass
class Sampled:
    """Captions drawn from the model, with the log-probability each word was drawn under (with gradient)."""

    tokens: torch.Tensor  # (N, T) long, pad after the first EOS
    logp: torch.Tensor  # (N, T) log p(token | prefix) under the very distribution it was drawn from; 0 after EOS
    alphas: torch.Tensor  # (N, T, L) attention at each step (zeros after EOS)


def sample(dec: StepDecoder, emb: torch.Tensor, k: int, max_len: int = 24) -> Sampled:
    """`k` captions per image drawn from the model's distribution, image-major (N = B·k).

    One forward pass draws each word and keeps its log-probability and attention in the autograd graph, so
    a policy gradient is taken under exactly the policy that sampled (the same dropout masks, if any):
    on-policy. Run it under `torch.no_grad()` where no gradient is wanted.
    """
    context, state = dec.prepare(emb)
    context, state = _repeat(context, k), _repeat(state, k)
    n, dev = emb.shape[0] * k, emb.device
    words = torch.full((n,), dec.bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    alphas: list[torch.Tensor] = []
    for _ in range(max_len):
        logits, alpha, state = dec.step(words, context, state)
        logp = logits.float().log_softmax(-1)  # (N, V)
        words = torch.multinomial(logp.detach().exp(), 1).squeeze(1).masked_fill(done, dec.pad_id)
        tokens.append(words)
        logps.append(logp.gather(1, words[:, None]).squeeze(1).masked_fill(done, 0.0))
        alphas.append(alpha.masked_fill(done[:, None], 0.0))
        done = done | (words == dec.eos_id)
        if bool(done.all()):
            break
    return Sampled(torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(alphas, 1))


@torch.no_grad()
def beam_search(
    dec: StepDecoder,
    emb: torch.Tensor,
    beam_size: int = 3,
    max_len: int = 24,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """Beam search batched over images × beams; beam 1 is greedy decoding.

    Scores are summed log-probabilities, divided by length**length_penalty when
    choosing the final beam (0 = no normalisation). `no_repeat_ngram`: see `ban_repeats`.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {beam_size}")
    context, state = dec.prepare(emb)
    b, k, dev, v = emb.shape[0], beam_size, emb.device, dec.vocab_size
    context, state = _repeat(context, k), _repeat(state, k)
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    words = torch.full((b * k,), dec.bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(b, k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(b, k, device=dev)
    seqs = torch.empty(b, k, 0, dtype=torch.long, device=dev)
    alph: torch.Tensor | None = None  # (B, K, t, L)
    pad_only = torch.full((v,), float("-inf"), device=dev)  # a finished beam may only emit padding, at no cost
    pad_only[dec.pad_id] = 0.0
    for _ in range(max_len):
        logits, alpha, state = dec.step(words, context, state)
        n_loc = alpha.shape[-1]
        logp = logits.float().log_softmax(-1).view(b, k, v)
        if no_repeat_ngram and seqs.shape[2]:
            logp = ban_repeats(logp.view(b * k, v), seqs.view(b * k, -1), no_repeat_ngram).view(b, k, v)
        logp = torch.where(done[..., None], pad_only, logp)
        cand = (scores[..., None] + logp).view(b, k * v)
        scores, flat = cand.topk(k, dim=-1)  # (B, K)
        beam, word = flat // v, flat % v
        idx = (beam + torch.arange(b, device=dev)[:, None] * k).view(-1)  # rows of (B·K)
        state = tuple(s[idx] for s in state)
        seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[2])), word[..., None]], dim=2)
        prev_alpha = alpha.view(b, k, n_loc).gather(1, beam[..., None].expand(-1, -1, n_loc))
        prev_done = done.gather(1, beam)
        step_alpha = prev_alpha.masked_fill(prev_done[..., None], 0.0)[:, :, None]  # (B, K, 1, L)
        alph = (
            step_alpha
            if alph is None
            else torch.cat([alph.gather(1, beam[..., None, None].expand(-1, -1, *alph.shape[2:])), step_alpha], 2)
        )
        lengths = lengths.gather(1, beam) + (~prev_done).float()
        done = prev_done | (word == dec.eos_id)
        words = word.view(-1)
        if bool(done.all()):
            break
    assert alph is not None  # max_len ≥ 1: at least one step ran
    final = scores / lengths.clamp(min=1) ** length_penalty if length_penalty else scores
    best = final.argmax(-1)  # (B,)
    ar = torch.arange(b, device=dev)
    return finish(seqs[ar, best], alph[ar, best], scores[ar, best], dec.eos_id, dec.pad_id)


def ban_repeats(logp: torch.Tensor, seqs: torch.Tensor, n: int) -> torch.Tensor:
    """`logp` (N, V) with -inf at every token that would make row r of `seqs` (N, t) repeat one of its n-grams
    of tokens (Hugging Face's `no_repeat_ngram_size`; 0 = off). A decoding constraint, not a model fix: the
    caption must say something else where it would loop, so what it says instead is scored as usual."""
    if n < 1 or seqs.shape[1] < n - 1:
        return logp
    rows, cols = [], []
    for r, seq in enumerate(seqs.tolist()):
        prefix = seq[len(seq) - (n - 1) :] if n > 1 else []
        for i in range(len(seq) - n + 1):
            if seq[i : i + n - 1] == prefix:
                rows.append(r)
                cols.append(seq[i + n - 1])
    if not rows:
        return logp
    out = logp.clone()
    out[torch.tensor(rows, device=logp.device), torch.tensor(cols, device=logp.device)] = float("-inf")
    return out


def finish(tokens: torch.Tensor, alphas: torch.Tensor, scores: torch.Tensor, eos_id: int, pad_id: int) -> Decoded:
    """Pad after the first EOS and count lengths (EOS included)."""
    is_eos = tokens == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    tokens = tokens.masked_fill(after, pad_id)
    alphas = alphas.masked_fill(after[..., None], 0.0)
    lengths = (~after).sum(1)
    return Decoded(tokens, lengths, alphas, scores)
