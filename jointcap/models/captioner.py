"""Show-Attend-Tell captioner: a soft-attention LSTM over the shared embedding's h×w locations.

Loops run over time steps only; every step is batched over images (and beams).
"""

from __future__ import annotations

import torch
from torch import nn

from jointcap.models import decoding
from jointcap.models.decoding import Decoded, ban_repeats

__all__ = ["AttentionCaptioner", "Decoded", "SoftAttention", "ban_repeats"]


class SoftAttention(nn.Module):
    """Additive (Bahdanau) attention: e = v·tanh(W_f f + W_h h [+ W_w x] [+ w_c·coverage]), α = softmax over
    locations.

    With `coverage`, the attention already spent on each location (the sum of the past steps' α) enters the
    score (Tu et al. 2016; See et al. 2017), so the decoder can tell where it has looked: a cue against naming
    the same part again. With `word_dim` > 0 the score also sees x, the word fed in at this step (the one just
    emitted): Show-Attend-Tell's query is the previous state alone, which has not read that word, so at "crown"
    in "a red crown" it does not know that "red" was said; top-down attention (Anderson et al. 2018) queries a
    state that has read it."""

    def __init__(
        self, feat_dim: int, hidden_dim: int, attn_dim: int, coverage: bool = False, word_dim: int = 0
    ) -> None:
        super().__init__()
        self.feat = nn.Linear(feat_dim, attn_dim)
        self.hid = nn.Linear(hidden_dim, attn_dim)
        self.cov = nn.Linear(1, attn_dim, bias=False) if coverage else None
        self.word = nn.Linear(word_dim, attn_dim, bias=False) if word_dim > 0 else None
        self.score = nn.Linear(attn_dim, 1)

    def forward(
        self,
        feats: torch.Tensor,
        feats_proj: torch.Tensor,
        h: torch.Tensor,
        cov: torch.Tensor | None = None,
        word: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # feats (N, L, D), feats_proj (N, L, A), h (N, H), cov (N, L) or None, word (N, E) or None
        query = self.hid(h)  # (N, A)
        if self.word is not None and word is not None:
            query = query + self.word(word)
        pre = feats_proj + query[:, None, :]  # (N, L, A)
        if self.cov is not None and cov is not None:
            pre = pre + self.cov(cov[..., None])
        e = self.score(torch.tanh(pre)).squeeze(-1)  # (N, L)
        alpha = e.softmax(dim=-1)
        context = torch.bmm(alpha[:, None, :], feats).squeeze(1)  # (N, D)
        return context, alpha


class AttentionCaptioner(nn.Module):
    """LSTM decoder with soft attention and a gated context (Xu et al. 2015).

    The word logits read the LSTM state alone, or with `deep_output` Xu et al.'s deep output layer (their eq. 7,
    with the tanh of their code, arctic-captions): logits = L_o tanh(E y_{t-1} + L_h h_t + L_z ẑ_t), so the
    attended context ẑ_t reaches the word directly — a colour in the cell looked at maps to its name without
    first passing through the LSTM's gates."""

    def __init__(
        self,
        feat_dim: int,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.3,
        coverage: bool = False,
        attend_with_word: bool = False,
        deep_output: bool = False,
        input_norm: bool = False,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_id, self.bos_id, self.eos_id = vocab_size, pad_id, bos_id, eos_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.attention = SoftAttention(feat_dim, hidden_dim, attn_dim, coverage, embed_dim if attend_with_word else 0)
        self.coverage = coverage
        # input_norm: the map it reads standardised per channel (batch statistics, running ones in eval): after the
        # embedding's ReLU a channel's mean dwarfs the small differences a body colour makes (measured on the
        # default data: no caption changed; docs/method.md)
        self.norm = nn.BatchNorm2d(feat_dim) if input_norm else None
        self.init_h = nn.Linear(feat_dim, hidden_dim)
        self.init_c = nn.Linear(feat_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, feat_dim)
        self.lstm = nn.LSTMCell(embed_dim + feat_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        # deep output (Xu et al. eq. 7): the state and the context projected to the word space, added to the
        # embedded input word; else the logits read the state alone
        self.out_h = nn.Linear(hidden_dim, embed_dim) if deep_output else None
        self.out_z = nn.Linear(feat_dim, embed_dim, bias=False) if deep_output else None
        self.out = nn.Linear(embed_dim if deep_output else hidden_dim, vocab_size)

    # -- shared pieces -------------------------------------------------------------------
    def prepare(self, emb: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Context (features (B, L, D), their attention projection (B, L, A)) and the initial state of an image:
        (h, c), and with `coverage` the attention spent so far per location (B, L), zeros."""
        if self.norm is not None:
            emb = self.norm(emb)
        feats = emb.flatten(2).transpose(1, 2)  # (B, L, D)
        mean = feats.mean(dim=1)
        state: tuple[torch.Tensor, ...] = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        if self.coverage:
            state = (*state, feats.new_zeros(feats.shape[:2]))
        return (feats, self.attention.feat(feats)), state

    def step(self, words: torch.Tensor, context: tuple[torch.Tensor, ...], state: tuple[torch.Tensor, ...]):
        """One LSTM step for N sequences: returns logits (N, V), attention (N, L), new state."""
        feats, feats_proj = context
        word_emb = self.embed(words)
        alpha, ctx, state = self._recur(word_emb, feats, feats_proj, state)
        return self._logits(word_emb, state[0], ctx), alpha, state

    def _recur(self, word_emb: torch.Tensor, feats, feats_proj, state):
        """The recurrent part of a step, from embedded words (N, E): attention (N, L), the gated context (N, D)
        and the new (h, c[, coverage])."""
        h, c = state[0], state[1]
        cov = state[2] if self.coverage else None
        context, alpha = self.attention(feats, feats_proj, h, cov, word_emb)
        context = torch.sigmoid(self.gate(h)) * context
        h, c = self.lstm(torch.cat([word_emb, context], dim=-1), (h, c))
        return alpha, context, ((h, c, cov + alpha) if cov is not None else (h, c))

    def _logits(self, word_emb: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Word logits (..., V) from the input word (..., E), the new state (..., H) and the context (..., D; only
        the deep output reads it)."""
        if self.out_h is None or self.out_z is None or context is None:
            return self.out(self.dropout(h))
        return self.out(self.dropout(torch.tanh(word_emb + self.out_h(h) + self.out_z(context))))

    # -- training --------------------------------------------------------------------------
    def forward(self, emb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing on `tokens` (B, T) = BOS … EOS pad…: logits (B, T-1, V), alphas (B, T-1, L)."""
        (feats, feats_proj), state = self.prepare(emb)
        words = self.embed(tokens[:, :-1])  # (B, T-1, E): all inputs at once, outside the time loop
        hs, ctxs, alphas = [], [], []
        for t in range(words.shape[1]):
            alpha, ctx, state = self._recur(words[:, t], feats, feats_proj, state)
            hs.append(state[0])
            alphas.append(alpha)
            if self.out_z is not None:  # only the deep output reads the contexts: keep none otherwise
                ctxs.append(ctx)
        # the output layer once over all steps: one large matmul instead of T-1 small ones
        context = torch.stack(ctxs, 1) if ctxs else None  # (B, T-1, D) for the deep output
        return self._logits(words, torch.stack(hs, 1), context), torch.stack(alphas, 1)

    # -- inference (jointcap.models.decoding) ------------------------------------------------
    def greedy(self, emb: torch.Tensor, max_len: int = 24, no_repeat_ngram: int = 0) -> Decoded:
        """Arg-max decoding (see `decoding.greedy`)."""
        return decoding.greedy(self, emb, max_len, no_repeat_ngram)

    def sample(self, emb: torch.Tensor, k: int, max_len: int = 24) -> decoding.Sampled:
        """`k` sampled captions per image with their log-probabilities, on-policy (see `decoding.sample`)."""
        return decoding.sample(self, emb, k, max_len)

    def beam_search(
        self,
        emb: torch.Tensor,
        beam_size: int = 3,
        max_len: int = 24,
        length_penalty: float = 0.0,
        no_repeat_ngram: int = 0,
    ) -> Decoded:
        """Beam search (see `decoding.beam_search`)."""
        return decoding.beam_search(self, emb, beam_size, max_len, length_penalty, no_repeat_ngram)
