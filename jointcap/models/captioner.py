"""Show-Attend-Tell captioner: a soft-attention LSTM over the shared embedding's h×w locations.

Loops run over time steps only; every step is batched over images (and beams).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Decoded:
    """Generated captions: token ids after BOS, padded after EOS, with per-step attention."""

    tokens: torch.Tensor  # (B, T) long, pad_id after the first EOS
    lengths: torch.Tensor  # (B,) number of tokens up to and including EOS
    alphas: torch.Tensor  # (B, T, L) attention at each step (zeros after EOS)
    scores: torch.Tensor  # (B,) total log-probability of the chosen sequence


class SoftAttention(nn.Module):
    """Additive (Bahdanau) attention: e = v·tanh(W_f f + W_h h [+ w_c·coverage]), α = softmax over locations.

    With `coverage`, the attention already spent on each location (the sum of the past steps' α) enters the
    score (Tu et al. 2016; See et al. 2017), so the decoder can tell where it has looked: a cue against naming
    the same part again."""

    def __init__(self, feat_dim: int, hidden_dim: int, attn_dim: int, coverage: bool = False) -> None:
        super().__init__()
        self.feat = nn.Linear(feat_dim, attn_dim)
        self.hid = nn.Linear(hidden_dim, attn_dim)
        self.cov = nn.Linear(1, attn_dim, bias=False) if coverage else None
        self.score = nn.Linear(attn_dim, 1)

    def forward(
        self, feats: torch.Tensor, feats_proj: torch.Tensor, h: torch.Tensor, cov: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # feats (N, L, D), feats_proj (N, L, A), h (N, H), cov (N, L) or None
        pre = feats_proj + self.hid(h)[:, None, :]  # (N, L, A)
        if self.cov is not None and cov is not None:
            pre = pre + self.cov(cov[..., None])
        e = self.score(torch.tanh(pre)).squeeze(-1)  # (N, L)
        alpha = e.softmax(dim=-1)
        context = torch.bmm(alpha[:, None, :], feats).squeeze(1)  # (N, D)
        return context, alpha


class AttentionCaptioner(nn.Module):
    """LSTM decoder with soft attention and a gated context (Xu et al. 2015)."""

    def __init__(
        self,
        feat_dim: int,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.3,
        coverage: bool = False,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_id, self.bos_id, self.eos_id = vocab_size, pad_id, bos_id, eos_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = SoftAttention(feat_dim, hidden_dim, attn_dim, coverage)
        self.coverage = coverage
        self.init_h = nn.Linear(feat_dim, hidden_dim)
        self.init_c = nn.Linear(feat_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, feat_dim)
        self.lstm = nn.LSTMCell(embed_dim + feat_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    # -- shared pieces -------------------------------------------------------------------
    def _prepare(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Locations (B, L, D), their attention projection (B, L, A) and the start state (h, c[, coverage (B, L)])."""
        feats = emb.flatten(2).transpose(1, 2)  # (B, L, D)
        mean = feats.mean(dim=1)
        state: tuple[torch.Tensor, ...] = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        if self.coverage:
            state = (*state, feats.new_zeros(feats.shape[:2]))
        return feats, self.attention.feat(feats), state

    def _step(self, words: torch.Tensor, feats, feats_proj, state):
        """One LSTM step for N sequences: returns logits (N, V), attention (N, L), new state."""
        alpha, state = self._recur(self.embed(words), feats, feats_proj, state)
        return self.out(self.dropout(state[0])), alpha, state

    def _recur(self, word_emb: torch.Tensor, feats, feats_proj, state):
        """The recurrent part of a step, from embedded words (N, E): attention (N, L), new (h, c)."""
        h, c = state[0], state[1]
        cov = state[2] if self.coverage else None
        context, alpha = self.attention(feats, feats_proj, h, cov)
        context = torch.sigmoid(self.gate(h)) * context
        h, c = self.lstm(torch.cat([word_emb, context], dim=-1), (h, c))
        return alpha, ((h, c, cov + alpha) if cov is not None else (h, c))

    # -- training --------------------------------------------------------------------------
    def forward(self, emb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on `tokens` (B, T) = BOS … EOS pad…: logits (B, T-1, V), alphas (B, T-1, L)."""
        feats, feats_proj, state = self._prepare(emb)
        words = self.embed(tokens[:, :-1])  # (B, T-1, E): all inputs at once, outside the time loop
        hs, alphas = [], []
        for t in range(words.shape[1]):
            alpha, state = self._recur(words[:, t], feats, feats_proj, state)
            hs.append(state[0])
            alphas.append(alpha)
        # the output layer once over all steps: one large matmul instead of T-1 small ones
        return self.out(self.dropout(torch.stack(hs, 1))), torch.stack(alphas, 1)

    # -- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, emb: torch.Tensor, max_len: int = 24, no_repeat_ngram: int = 0) -> Decoded:
        """Arg-max decoding, batched over images (`no_repeat_ngram`: see `ban_repeats`)."""
        feats, feats_proj, state = self._prepare(emb)
        b, dev = emb.shape[0], emb.device
        words = torch.full((b,), self.bos_id, dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        tokens: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        scores = torch.zeros(b, device=dev)
        for _ in range(max_len):
            logits, alpha, state = self._step(words, feats, feats_proj, state)
            logp = logits.float().log_softmax(-1)
            if no_repeat_ngram and tokens:
                logp = ban_repeats(logp, torch.stack(tokens, 1), no_repeat_ngram)
            words = logp.argmax(-1)
            scores += torch.where(done, 0.0, logp.gather(1, words[:, None]).squeeze(1))
            words = words.masked_fill(done, self.pad_id)
            tokens.append(words)
            alphas.append(alpha.masked_fill(done[:, None], 0.0))
            done = done | (words == self.eos_id)
            if bool(done.all()):
                break
        return _finish(torch.stack(tokens, 1), torch.stack(alphas, 1), scores, self.eos_id, self.pad_id)

    @torch.no_grad()
    def sample(self, emb: torch.Tensor, k: int, max_len: int = 24) -> torch.Tensor:
        """`k` captions per image drawn from the model's distribution: token ids (B·k, T), image-major,
        pad after EOS (self-critical training scores them and re-runs them with gradient)."""
        feats, feats_proj, state = self._prepare(emb)
        rep = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731  (B, …) → (B·k, …)
        feats, feats_proj, state = rep(feats), rep(feats_proj), tuple(rep(x) for x in state)
        n, dev = feats.shape[0], emb.device
        words = torch.full((n,), self.bos_id, dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        tokens = []
        for _ in range(max_len):
            logits, _, state = self._step(words, feats, feats_proj, state)
            words = torch.multinomial(logits.float().softmax(-1), 1).squeeze(1).masked_fill(done, self.pad_id)
            tokens.append(words)
            done = done | (words == self.eos_id)
            if bool(done.all()):
                break
        return _finish(
            torch.stack(tokens, 1),
            torch.zeros(n, len(tokens), 1, device=dev),
            torch.zeros(n, device=dev),
            self.eos_id,
            self.pad_id,
        ).tokens

    @torch.no_grad()
    def beam_search(
        self,
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
        feats, feats_proj, state = self._prepare(emb)
        b, k, dev, v = emb.shape[0], beam_size, emb.device, self.vocab_size
        rep = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731  (B, …) → (B·K, …)
        feats, feats_proj, state = rep(feats), rep(feats_proj), tuple(rep(x) for x in state)
        n_loc = feats.shape[1]
        scores = torch.full((b, k), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # all beams start identical: keep one alive
        words = torch.full((b * k,), self.bos_id, dtype=torch.long, device=dev)
        done = torch.zeros(b, k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b, k, device=dev)
        seqs = torch.empty(b, k, 0, dtype=torch.long, device=dev)
        alph = torch.empty(b, k, 0, n_loc, device=dev)
        pad_only = torch.full((v,), float("-inf"), device=dev)  # a finished beam may only emit padding, at no cost
        pad_only[self.pad_id] = 0.0
        for _ in range(max_len):
            logits, alpha, state = self._step(words, feats, feats_proj, state)
            logp = logits.float().log_softmax(-1).view(b, k, v)
            if no_repeat_ngram and seqs.shape[2]:
                logp = ban_repeats(logp.view(b * k, v), seqs.view(b * k, -1), no_repeat_ngram).view(b, k, v)
            logp = torch.where(done[..., None], pad_only, logp)
            cand = (scores[..., None] + logp).view(b, k * v)
            scores, flat = cand.topk(k, dim=-1)  # (B, K)
            beam, word = flat // v, flat % v
            idx = (beam + torch.arange(b, device=dev)[:, None] * k).view(-1)  # rows of (B·K)
            state = tuple(x[idx] for x in state)
            seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[2])), word[..., None]], dim=2)
            prev_alpha = alpha.view(b, k, n_loc).gather(1, beam[..., None].expand(-1, -1, n_loc))
            prev_done = done.gather(1, beam)
            alph = torch.cat(
                [
                    alph.gather(1, beam[..., None, None].expand(-1, -1, *alph.shape[2:])),
                    prev_alpha.masked_fill(prev_done[..., None], 0.0)[:, :, None],
                ],
                dim=2,
            )
            lengths = lengths.gather(1, beam) + (~prev_done).float()
            done = prev_done | (word == self.eos_id)
            words = word.view(-1)
            if bool(done.all()):
                break
        final = scores / lengths.clamp(min=1) ** length_penalty if length_penalty else scores
        best = final.argmax(-1)  # (B,)
        ar = torch.arange(b, device=dev)
        return _finish(seqs[ar, best], alph[ar, best], scores[ar, best], self.eos_id, self.pad_id)


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


def _finish(tokens: torch.Tensor, alphas: torch.Tensor, scores: torch.Tensor, eos_id: int, pad_id: int) -> Decoded:
    """Pad after the first EOS and count lengths (EOS included)."""
    is_eos = tokens == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    tokens = tokens.masked_fill(after, pad_id)
    alphas = alphas.masked_fill(after[..., None], 0.0)
    lengths = (~after).sum(1)
    return Decoded(tokens, lengths, alphas, scores)
