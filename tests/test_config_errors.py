"""A misspelt key, a wrong type or a bad value fails at start, naming the key and what is allowed."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from jointcap.config import ConfigError, DataConfig, ModelConfig, validate
from jointcap.data.datamodule import JointDataModule
from jointcap.lit_module import JointCaptionModule
from tests.conftest import TINY, run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    "overrides", [[], ["model=classifier"], ["model=captioner"]] + [[f"+experiment={e}"] for e in EXPERIMENTS]
)
def test_shipped_configs_are_valid(overrides: list[str]) -> None:
    validate(_compose(overrides))


def test_schema_fields_are_constructor_arguments() -> None:
    """The schema may only describe arguments the targets really take (it drifts otherwise)."""
    for schema, target in ((ModelConfig, JointCaptionModule), (DataConfig, JointDataModule)):
        params = set(inspect.signature(target).parameters)
        fields = {f.name for f in dataclasses.fields(schema)} - {"_target_"}
        assert fields <= params, f"{schema.__name__} has fields {fields - params} that {target.__name__} does not take"


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.loss.cam_weight=-1", ["model.loss.cam_weight", "≥ 0"]),
        ("model.decode.beam_size=0", ["model.decode.beam_size", "[1, 64]"]),
        ("model.loss.divergence=foo", ["model.loss.divergence", "js, kl, l1, l2, cosine"]),
        ("model.encoder.name=resnet7", ["model.encoder.name", "resnet18, resnet34, resnet50, resnet101"]),
        ("model.task=both", ["model.task", "joint, classifier, captioner"]),
        ("model.loss.grad_to=nobody", ["model.loss.grad_to", "both, captioner, classifier"]),
        ("+model.loss.cam_wieght=1", ["model.loss.cam_wieght", "unknown key", "cam_weight"]),
        ("model.decode.max_len=twelve", ["model.decode.max_len", "integer"]),
        ("model.embedding.dropout=1.5", ["model.embedding.dropout", "< 1.0"]),
        ("data.batch_size=0", ["data.batch_size", "≥ 1"]),
        ("data.tokenizer_type=chars", ["data.tokenizer_type", "unigram, bpe, char, word"]),
        ("+data.source.n_trian=5", ["data.source.n_trian", "unknown key", "n_train"]),
        ("+trainer.max_epoch=3", ["trainer.max_epoch", "unknown key", "max_epochs"]),
        ("+callbacks.checkpoint.save_lats=true", ["callbacks.checkpoint.save_lats", "save_last"]),
        ("+sed=1", ["sed", "unknown top-level key", "seed"]),
        ("ckpt_path=/no/such.ckpt", ["ckpt_path=/no/such.ckpt", "no such checkpoint file"]),
    ],
)
def test_bad_value_names_key_and_allowed_values(override: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        validate(_compose([override]))
    for text in expected:
        assert text in str(e.value), f"{text!r} missing from:\n{e.value}"


@pytest.mark.slow
def test_cli_fails_before_any_data_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI: every problem (overrides and a typo inside a YAML file) reported at once, no cache made."""
    data = tmp_path / "data"
    monkeypatch.setenv("JOINTCAP_DATA", str(data))
    (tmp_path / "extra" / "experiment").mkdir(parents=True)
    (tmp_path / "extra" / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nmodel:\n  loss:\n    cam_wieght: 2.0\n"
    )
    bad = [
        "model.loss.cam_weight=-1",
        "model.decode.beam_size=0",
        "model.loss.divergence=foo",
        "model.encoder.name=resnet7",
        "model.task=both",
    ]
    proc = run_cli(
        [
            *TINY,
            *bad,
            f"hydra.searchpath=[file://{tmp_path / 'extra'}]",
            "+experiment=typo",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert proc.returncode != 0
    for text in [
        "invalid configuration (6 problems)",
        "model.loss.cam_weight=-1",
        "model.decode.beam_size=0",
        "js, kl, l1, l2, cosine",
        "resnet18, resnet34, resnet50, resnet101",
        "joint, classifier, captioner",
        "model.loss.cam_wieght: unknown key",
    ]:
        assert text in proc.stderr, f"{text!r} missing from stderr:\n{proc.stderr[-3000:]}"
    assert not data.exists(), "no data work may happen before the config is checked"
