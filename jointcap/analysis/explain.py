"""What a trained model says about images and where it looks: class, CAM, caption, per-word attention.

Shared by `jointcap.predict`, the media callback and the word-grounding metric. Images come in
as the uint8 (B, 3, S, S) the cache stores; normalisation is the module's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from jointcap.metrics.localisation import word_attention

if TYPE_CHECKING:
    from jointcap.lit_module import JointCaptionModule


@dataclass
class Explanation:
    """One batch explained; a head the model lacks leaves its fields None."""

    probs: torch.Tensor | None  # (B, K) class probabilities
    pred: torch.Tensor | None  # (B,) predicted class
    cam: torch.Tensor | None  # (B, h, w) CAM of the predicted class
    tokens: torch.Tensor | None  # (B, T) generated ids, PAD after EOS
    step_attention: torch.Tensor | None  # (B, T, h, w) attention at each generated step
    captions: list[str]  # B generated captions ("" without a captioner)
    words: list[list[str]]  # per image its generated words
    word_maps: torch.Tensor | None  # (B, W, h, w) attention at each word (mean over its pieces), zero-padded

    def mean_attention(self) -> torch.Tensor | None:
        """(B, h, w) attention averaged over each image's words."""
        if self.word_maps is None:
            return None
        n = torch.tensor([max(1, len(w)) for w in self.words], device=self.word_maps.device)
        return self.word_maps.sum(1) / n.view(-1, 1, 1)


def to_model_input(module: JointCaptionModule, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) → the normalised float batch the module trains on, on its device."""
    return module.on_after_batch_transfer({"image": images.to(module.device)}, 0)["image"]


@torch.no_grad()
def explain(module: JointCaptionModule, images: torch.Tensor, beam_size: int | None = None) -> Explanation:
    """Classify and caption uint8 images (B, 3, S, S); maps on the embedding grid."""
    was_training = module.training
    module.eval()
    try:
        model = module.net
        emb = model.embed(to_model_input(module, images))  # (B, D, h, w)
        grid = (int(emb.shape[-2]), int(emb.shape[-1]))
        probs = pred = cam = None
        if model.classifier is not None:
            probs = model.classifier(emb).float().softmax(1)  # (B, K)
            pred = probs.argmax(1)
            cam = model.cam(emb, pred).float()  # (B, h, w)
        tokens = steps = word_maps = None
        captions = [""] * images.shape[0]
        words: list[list[str]] = [[] for _ in range(images.shape[0])]
        if model.captioner is not None:
            c = module.decode_cfg
            dec = model.generate(emb, beam_size or c.test_beam_size, c.max_len, c.length_penalty, c.no_repeat_ngram)
            tokens = dec.tokens
            steps = dec.alphas.float().view(*dec.alphas.shape[:2], *grid)  # (B, T, h, w)
            word_maps, words = word_attention(dec.tokens, dec.alphas, module.tok, grid)
            captions = [module.tok.decode(row.tolist()) for row in dec.tokens.cpu()]
    finally:
        module.train(was_training)
    return Explanation(probs, pred, cam, tokens, steps, captions, words, word_maps)
