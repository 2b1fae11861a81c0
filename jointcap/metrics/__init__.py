"""Evaluation metrics.

text (tokenize) · bleu / rouge / cider (pycocoevalcap-equal, vectorised) · caption_metric
(score_captions, the DDP-safe CaptionScores Metric) · localisation (pointing game, mask IoU,
MaxBoxAccV2, part pointing, CAM/attention agreement, word grounding) · bench_captions.
Submodules are imported explicitly so that `jointcap.metrics.text` stays light.
"""
