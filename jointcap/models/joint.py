"""The joint model: encoder → shared embedding → {classifier + CAM, attention captioner}."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jointcap.models.captioner import AttentionCaptioner, Decoded
from jointcap.models.classifier import CAMClassifier
from jointcap.models.embedding import Embedding
from jointcap.models.encoder import Encoder

TASKS = ("joint", "classifier", "captioner")


@dataclass
class JointOutput:
    """What one teacher-forced forward pass yields; absent heads give None."""

    emb: torch.Tensor  # (B, D + S, h, w): the shared embedding, then S captioner-only skip channels (often 0)
    class_logits: torch.Tensor | None  # (B, K)
    word_logits: torch.Tensor | None  # (B, T-1, V)
    alphas: torch.Tensor | None  # (B, T-1, h·w)


class JointModel(nn.Module):
    """Both heads read the same embedding map; `task` drops a head for the single-task baselines."""

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        task: str = "joint",
        encoder: dict | None = None,
        embedding: dict | None = None,
        classifier: dict | None = None,
        captioner: dict | None = None,
        special_ids: dict | None = None,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"model.task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.encoder = Encoder(**(encoder or {}))
        self.embedding = Embedding(
            self.encoder.out_channels, **(embedding or {}), stem_channels=self.encoder.stem_channels
        )
        dim = self.embedding.dim
        self.classifier = CAMClassifier(dim, num_classes, **(classifier or {})) if task != "captioner" else None
        self.captioner = (
            AttentionCaptioner(self.embedding.out_dim, vocab_size, **(captioner or {}), **(special_ids or {}))
            if task != "classifier"
            else None
        )

    def compile_backbone(self, **options) -> None:
        """torch.compile the encoder and the embedding in place (the captioner's time loop stays eager)."""
        self.encoder.compile(**options)
        self.embedding.compile(**options)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D + S, h, w): the shared embedding, then the captioner-only skip channels (S = 0: none)."""
        if self.embedding.skip is not None and self.embedding.skip_from == "stem":
            out, stem = self.encoder.forward_with_stem(images)
            return self.embedding(out, stem)
        return self.embedding(self.encoder(images))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> JointOutput:
        """images (B, 3, S, S); tokens (B·k, T) image-major: k captions of each image teacher-forced on the one
        embedding (k = 1 unless `data.captions_per_step`)."""
        emb = self.embed(images)
        logits = self.classifier(emb) if self.classifier is not None else None
        word_logits = alphas = None
        if self.captioner is not None and tokens is not None:
            word_logits, alphas = self.teacher_force(emb, tokens)
        return JointOutput(emb, logits, word_logits, alphas)

    def teacher_force(self, emb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The captioner teacher-forced on tokens (B·k, T), image-major: k captions of each image on its one
        embedding emb (B, D + S, h, w) → word logits (B·k, T-1, V) and attention (B·k, T-1, h·w)."""
        if self.captioner is None:
            raise RuntimeError("the classifier-only model has no captioner")
        k = tokens.shape[0] // emb.shape[0]  # captions per image (image-major), 1 unless data.captions_per_step
        if k * emb.shape[0] != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} captions for {emb.shape[0]} images: not a whole number each")
        return self.captioner(emb.repeat_interleave(k, 0) if k > 1 else emb, tokens)

    def cam(self, emb: torch.Tensor, classes: torch.Tensor, weights_grad: bool = True) -> torch.Tensor:
        """CAM (B, h, w) of `classes`; needs the classifier head (`weights_grad`: see CAMClassifier.cam)."""
        if self.classifier is None:
            raise RuntimeError("the captioner-only model has no classifier, hence no CAM")
        return self.classifier.cam(emb, classes, weights_grad)

    def generate(
        self,
        emb: torch.Tensor,
        beam_size: int = 1,
        max_len: int = 24,
        length_penalty: float = 0.0,
        no_repeat_ngram: int = 0,
    ) -> Decoded:
        if self.captioner is None:
            raise RuntimeError("the classifier-only model has no captioner")
        if beam_size == 1:
            return self.captioner.greedy(emb, max_len, no_repeat_ngram)
        return self.captioner.beam_search(emb, beam_size, max_len, length_penalty, no_repeat_ngram)
