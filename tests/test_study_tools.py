"""Study tooling (issue 11): per-image test predictions, and skipping finished jobs in a resumable sweep."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch

from jointcap.runtime.callbacks.predictions import PerImagePredictions
from jointcap.runtime.tracking import finished_results, write_results
from tests.conftest import ROOT, TINY, run_cli


class _Tok:
    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids if i)


def _trainer(groups: list[int] | None) -> Any:  # a stand-in for the Trainer
    extra = {"group": groups} if groups is not None else {}
    split = SimpleNamespace(keys=[f"test_{i:06d}" for i in range(4)], extra=extra)
    return SimpleNamespace(datamodule=SimpleNamespace(splits={"test": split}), is_global_zero=True)


def test_test_predictions_rows(tmp_path: Path) -> None:
    cb = PerImagePredictions(str(tmp_path))
    trainer, module = _trainer([0, 1, 1, 0]), cast(Any, SimpleNamespace(tokenizer=_Tok()))
    cb.on_test_epoch_start(trainer, module)
    for idx in ([2, 3], [0, 1]):  # batches in any order; rows come out by index
        out = {
            "index": torch.tensor(idx),
            "label": torch.tensor([1, 2]),
            "pred": torch.tensor([1, 0]),
            "prob": torch.tensor([0.9, 0.4]),
            "tokens": torch.tensor([[5, 6, 0], [7, 0, 0]]),
            "cam": torch.zeros(2, 3, 3),
            "caption_f1": torch.tensor([0.5, 1.0]),
        }
        cb.on_test_batch_end(trainer, module, out, None, 0)
    cb.on_test_end(trainer, module)
    rows = list(csv.DictReader(open(tmp_path / "test_predictions.csv")))
    assert [r["key"] for r in rows] == [f"test_{i:06d}" for i in range(4)]
    assert rows[0] == {
        "index": "0",
        "key": "test_000000",
        "label": "1",
        "pred": "1",
        "correct": "1",
        "prob": "0.9",
        "caption": "w5 w6",
        "group": "0",
        "caption_f1": "0.5",
    }
    assert rows[1]["correct"] == "0" and rows[1]["group"] == "1" and "cam" not in rows[1]


def test_test_predictions_without_classifier_or_groups(tmp_path: Path) -> None:
    cb = PerImagePredictions(str(tmp_path), filename="p.csv")
    trainer, module = _trainer(None), cast(Any, SimpleNamespace(tokenizer=_Tok()))
    cb.on_test_batch_end(
        trainer,
        module,
        {"index": torch.tensor([0]), "label": torch.tensor([3]), "tokens": torch.tensor([[4]])},
        None,
        0,
    )
    cb.on_test_end(trainer, module)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows == [{"index": "0", "key": "test_000000", "label": "3", "caption": "w4"}]


def test_finished_results(tmp_path: Path) -> None:
    assert finished_results(tmp_path) is None
    (tmp_path / "results.json").write_text("{trunc")
    assert finished_results(tmp_path) is None  # a torn file is not a finished job
    write_results(tmp_path, {"test/acc1": 0.5}, "test/acc1")
    results = finished_results(tmp_path)
    assert results is not None and results["objective_value"] == 0.5


@pytest.mark.slow
def test_skip_if_done_returns_before_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(
        json.dumps({"objective": "val/acc1", "objective_value": 0.25, "metrics": {"val/acc1": 0.25}})
    )
    proc = run_cli([*TINY, "skip_if_done=true", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert "skipping this job" in proc.stdout + proc.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()


def _composed(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from tests.test_configs import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_job_mismatch_names_what_makes_another_job(tmp_path: Path) -> None:
    """A folder finished at another budget (epochs, seed, a model or data key) is not this job; how it computes is."""
    from omegaconf import OmegaConf

    from jointcap.runtime.resume import job_mismatch

    base = ["+experiment=hard_cam", "+budget=study_hard", "seed=1"]
    record = tmp_path / "config.yaml"
    record.write_text(OmegaConf.to_yaml(_composed(base)))
    assert job_mismatch(record, _composed(base)) == []
    assert job_mismatch(record, _composed([*base, "model.channels_last=false", "data.num_workers=2"])) == []
    changed = job_mismatch(record, _composed(["+experiment=hard_cam", "+budget=study_field", "seed=2"]))
    assert changed == ["seed: 1 → 2", "model.loss.scst_epochs: 2 → 0", "trainer.max_epochs: 16 → 8"]
    assert job_mismatch(record, _composed([*base, "data.source.captions=random_parts"])) == [
        "data.source.captions: 'field_marks' → 'random_parts'"
    ]
    assert job_mismatch(tmp_path / "none.yaml", _composed(base)) == []  # no record: a run from before records
    older: Any = OmegaConf.to_container(_composed(base))  # recorded before an option existed: at its default, same
    del older["model"]["captioner"]["coverage"], older["model"]["loss"]["cam_start_epoch"]
    record.write_text(OmegaConf.to_yaml(older))
    assert job_mismatch(record, _composed(base)) == []
    assert job_mismatch(record, _composed([*base, "model.captioner.coverage=true"])) == [
        "model.captioner.coverage: None → True"
    ]


@pytest.mark.slow
def test_skip_if_done_refuses_a_folder_finished_by_another_job(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"objective": "val/acc1", "objective_value": 0.25, "metrics": {}}))
    other = _composed([*TINY, "seed=7"])  # what filled the folder: the same job but its seed
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(other))
    proc = run_cli([*TINY, "skip_if_done=true", f"hydra.run.dir={run_dir}"], cwd=tmp_path, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "holds a finished run of another job (seed: 7 → 0)" in said, said
    assert "skipping this job" not in said and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("experiment", ["hard_classifier", "hard_captioner", "hard_nocam", "hard_cam"])
def test_hard_experiments_with_study_budget_compose_and_validate(experiment: str) -> None:
    from hydra import compose, initialize_config_dir

    from jointcap.config import validate
    from tests.test_configs import CONF

    overrides = [
        f"+experiment={experiment}",
        "+budget=study_hard",
        "skip_if_done=true",
        "data.source.shortcut=true",
        "data.source.per_class=15",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    assert cfg.data.source._target_.endswith("HardSyntheticSource") and cfg.data.source.per_class == 15
    assert cfg.callbacks.checkpoint.monitor is None  # the last-epoch rule
    assert cfg.callbacks.test_predictions._target_.endswith("PerImagePredictions") and cfg.callbacks.media is None
    assert (cfg.model.loss.cam_weight > 0) == (experiment == "hard_cam")


def test_hard_study_job_end_to_end_writes_per_image_caption_facts(tmp_path: Path) -> None:
    """A tiny `+experiment=hard_cam +budget=study_hard` job: its test_predictions.csv carries, per image, the
    caption's class_recall / facts_right / facts_wrong and part_repeat, equal to reading the written caption against
    the image's stored facts (the paired summary bootstraps these over images × seeds); results.json's
    test/rep_part is their mean, and the summary's reader for the job (`paired.fact_reader`) reads the same."""
    from jointcap.analysis import paired
    from jointcap.analysis import summarize as sm
    from jointcap.data import cache
    from jointcap.data import synthetic_hard as sh
    from jointcap.metrics.correctness import FactReader, image_fact_scores
    from jointcap.metrics.text import tokenize
    from tests.conftest import run_cli

    run_dir = tmp_path / "run"
    small: dict[str, Any] = {"n_classes": 12, "image_size": 48, "per_class": 4, "val_per_class": 1, "test_per_class": 3}
    run_cli(
        [
            "+experiment=hard_cam",
            "+budget=study_hard",
            *(f"data.source.{k}={v}" for k, v in small.items()),
            "data.batch_size=16",
            "data.vocab_size=120",
            "trainer.max_epochs=1",
            "model.loss.scst_epochs=0",
            "model.optim.warmup_steps=2",
            "model.decode.max_len=12",
            "model.embedding.dim=32",
            "model.captioner.hidden_dim=32",
            "model.captioner.embed_dim=16",
            "model.captioner.attn_dim=16",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    rows = list(csv.DictReader(open(run_dir / "test_predictions.csv")))
    built = tmp_path / "data"
    sh.HardSyntheticSource(**small).build(built)  # the same images and facts the run generated
    test, reader = cache.read_split(built / "test"), FactReader.from_info(cache.read_info(built))
    assert reader is not None and len(rows) == 36 == len(test.labels)
    assert {"class_recall", "facts_right", "facts_wrong", "part_repeat", "caption"} <= set(rows[0])
    for row in rows:
        i = int(row["index"])
        words = tokenize(row["caption"])
        want = image_fact_scores(reader.read(words), test.extra["facts"][i], test.extra["class_facts"][i])
        want["part_repeat"] = float(reader.repeats_part(words))
        assert {k: float(row[k]) for k in want} == pytest.approx(want, nan_ok=True)
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert metrics["test/rep_part"] == pytest.approx(sum(float(r["part_repeat"]) for r in rows) / len(rows))
    (job,) = sm.find_jobs([run_dir])
    assert paired.fact_reader(job) == reader


def _study_families() -> list[tuple[str, list[str]]]:
    """(name, overrides) of every `family NAME OVERRIDE…` line of experiments/run_hard_study.sh, its override
    variables expanded as bash does ("$JOINT" one word, unquoted $LOWDATA_STEPS / $KL … into their words)."""
    text = (ROOT / "experiments" / "run_hard_study.sh").read_text()
    # VAR=value or VAR="value" lines without an expansion of their own (the ${X:-default} settings are not overrides)
    variables = dict(re.findall(r'^([A-Z][A-Z0-9_]*)="?([^"$\s][^"$]*?)"?(?:\s+#.*)?$', text, re.M))
    out = []
    for line in text.splitlines():
        if line.startswith("family "):
            words = re.sub(r'"\$([A-Z0-9_]+)"', lambda m: shlex.quote(variables[m[1]]), line)
            words = re.sub(r"\$([A-Z][A-Z0-9_]*)", lambda m: variables[m[1]], words)
            name, *args = shlex.split(words)[1:]
            out.append((name, args))
    return out


@pytest.mark.parametrize("summary,called", [("1", True), ("0", False)])
def test_the_study_script_summarises_at_its_end_unless_told_not_to(tmp_path: Path, summary: str, called: bool) -> None:
    """SUMMARY=0 leaves out the full-study summary a lane would otherwise redo after each family."""
    log, fake = tmp_path / "calls.log", tmp_path / "py"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')  # stands in for python: records what it was asked to run
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "ONLY": "no_such_family", "OUT": str(tmp_path / "out"), "SUMMARY": summary}
    subprocess.run(["bash", str(ROOT / "experiments" / "run_hard_study.sh")], env=env, check=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    assert [c.split()[0] for c in calls] == (["experiments/summarize_hard.py"] if called else []), calls


STUDY_FAMILIES = _study_families()  # parsed once at collection, for both the cases and their ids


@pytest.mark.parametrize("name,overrides", STUDY_FAMILIES, ids=[n for n, _ in STUDY_FAMILIES])
def test_every_study_family_composes_as_a_multirun_does(name: str, overrides: list[str]) -> None:
    """Hydra composes a sweep's base config from its non-swept overrides before any job (where the default data
    lacks the hard source's keys), then each job's: both must compose, and every job must validate."""
    import itertools

    from hydra import compose, initialize_config_dir

    from jointcap.config import validate
    from tests.test_configs import CONF

    fixed = ["seed=1", "+budget=study_hard", "skip_if_done=true", *[o for o in overrides if "," not in o]]
    swept = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")] for o in overrides if "," in o]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        compose(config_name="config", overrides=fixed)  # the sweep's base composition
        for combo in itertools.product(*swept):
            cfg = compose(config_name="config", overrides=[*fixed, *combo])
            validate(cfg)
            assert cfg.data.source._target_.endswith("HardSyntheticSource"), (name, combo)
