"""The LightningModule's typed hyper-parameters, its guarded network and its evaluation metrics collection."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from jointcap.config import DecodeConfig, LossConfig, MetricsConfig, OptimConfig
from jointcap.lit_module import JointCaptionModule
from jointcap.metrics.evaluation import EvalMetrics

SMALL: dict[str, Any] = dict(
    encoder={"stage": 2, "output_stride": 8},
    embedding={"dim": 16},
    captioner={"embed_dim": 8, "hidden_dim": 16, "attn_dim": 8},
)


def test_hyper_parameters_are_typed_with_the_schema_defaults() -> None:
    module = JointCaptionModule(loss={"cam_weight": 0.5}, decode={"beam_size": 2})
    assert module.loss_cfg == LossConfig(cam_weight=0.5)
    assert module.decode_cfg == DecodeConfig(beam_size=2)
    assert module.optim_cfg == OptimConfig() and module.metrics_cfg == MetricsConfig()
    assert module.hparams["loss"] == {"cam_weight": 0.5}  # stored as given: a plain dict (weights-only loads)


def test_unknown_hyper_parameter_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model\.loss: unknown key\(s\) cam_wieght"):
        JointCaptionModule(loss={"cam_wieght": 1.0})


def test_net_before_setup_is_a_clear_error() -> None:
    module = JointCaptionModule()
    with pytest.raises(RuntimeError, match="not built yet: call setup"):
        _ = module.net
    with pytest.raises(RuntimeError, match="no tokenizer yet"):
        _ = module.tok


def test_metric_options_rebuild_the_collections_and_stay_plain_in_hparams() -> None:
    module = JointCaptionModule(num_classes=5, vocab_size=40, **SMALL)
    assert isinstance(module.eval_metrics["test"], EvalMetrics) and "cam_box_v1" not in module.eval_metrics["val"]
    module.set_metric_options(box_stages=["val", "test"], part_radius=0.1)
    assert "cam_box_v1" in module.eval_metrics["val"] and module.metrics_cfg.part_radius == 0.1
    assert module.hparams["metrics"] == {"meteor": False, "part_radius": 0.1, "cam_threshold": 0.2,
                                         "box_stages": ["val", "test"]}  # fmt: skip


def test_eval_metrics_compute_names_every_score_and_reset_clears() -> None:
    no_facts: tuple[list[str], list[str]] = ([], [])
    metrics = EvalMetrics("val", "classifier", 3, MetricsConfig(), "js", 8, {}, str, lambda i: [], lambda i: no_facts)
    assert metrics.compute() == {}  # nothing seen: nothing to report
    labels = torch.tensor([0, 1])
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # (B, K): right, then wrong
    cam = torch.rand(2, 4, 4)  # (B, h, w)
    batch = {"label": labels, "index": torch.tensor([0, 1]), "image": torch.zeros(2, 3, 16, 16)}
    metrics.update(batch, torch.tensor(1.5), logits, cam, None, None, None, (4, 4), {}, None)
    values = metrics.compute()
    assert values["acc1"] == pytest.approx(0.5) and values["loss"] == pytest.approx(1.5)
    assert "cam_entropy" in values and not any(k.startswith("attn_") for k in values)  # a classifier's own maps
    metrics.reset()
    assert metrics.compute() == {}
