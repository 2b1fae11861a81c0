"""The hard-study summary (jointcap.analysis.paired): settings paired with their family's λ = 0 on seeds and images."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from jointcap.analysis import paired


def _job(
    root: Path,
    name: str,
    seed: int,
    cam_weight: float,
    p_correct: float,
    shortcut: bool = False,
    divergence: str = "js",
    epochs: int | None = None,
) -> None:
    folder = root / f"{name}_s{seed}"
    (folder / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "model": {"task": "joint", "loss": {"cam_weight": cam_weight, "divergence": divergence}},
        "data": {"source": {"shortcut": shortcut, "per_class": 30}},
        "trainer": {"max_epochs": epochs or 16},
    }
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    overrides = [f"seed={seed}", f"model.loss.cam_weight={cam_weight}"]
    (folder / ".hydra" / "overrides.yaml").write_text(
        json.dumps(overrides + ([f"trainer.max_epochs={epochs}"] if epochs else []))
    )
    rng = np.random.default_rng(seed * 100 + int(cam_weight * 10) + 7 * shortcut)
    correct = (rng.random(300) < p_correct).astype(int)
    metrics = {"test/acc1": float(correct.mean()), "test/cider_d": 0.5 + 0.01 * seed + 0.1 * cam_weight}
    (folder / "results.json").write_text(json.dumps({"objective": "test/acc1", "metrics": metrics}))
    with open(folder / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", "label", "pred", "correct", "prob", "caption", "group"])
        for i, c in enumerate(correct):
            w.writerow([i, f"test_{i:06d}", 0, 0 if c else 1, c, 0.5, "a bird", i % 2])


def _rows(root: Path, *settings: tuple, n_boot: int = 100) -> list[paired.Row]:
    """Seeds 1–3 of each setting (`name, λ, p_correct[, shortcut, divergence]`, as `_job` takes them), paired."""
    for seed in (1, 2, 3):
        for name, *spec in settings:
            _job(root, name, seed, *spec)
    return paired.paired_rows(paired.sm.find_jobs([root]), n_boot=n_boot)


def test_paired_summary_finds_a_real_gain_and_no_gain(tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        _job(tmp_path / "runs", "nocam", seed, 0.0, 0.5)
        _job(tmp_path / "runs", "cam", seed, 1.0, 0.7)  # a large real gain
        _job(tmp_path / "runs", "sc_nocam", seed, 0.0, 0.6, shortcut=True)
        _job(tmp_path / "runs", "sc_cam", seed, 1.0, 0.6, shortcut=True)  # no gain
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "paired_7_correct.png").write_bytes(b"")  # a plot of a family an earlier summary had
    files = paired.summarize_study([tmp_path / "runs"], tmp_path / "out", n_boot=300)
    assert not (tmp_path / "out" / "paired_7_correct.png").exists()
    rows = list(csv.DictReader(open(files["paired_csv"])))
    get = {(r["family"], r["metric"]): r for r in rows}
    gain = get[("shortcut=False, per_class=30", "correct")]
    assert (
        gain["significant"] == "True"
        and float(gain["ci_low"]) > 0
        and gain["n_seeds"] == "3"
        and gain["n_images"] == "300"
    )
    null = get[("shortcut=True, per_class=30", "correct")]
    assert null["significant"] == "False" and float(null["ci_low"]) < 0 < float(null["ci_high"])
    assert ("shortcut=True, per_class=30", "worst_group_acc") in get  # groups present → worst-group comparison
    assert get[("shortcut=False, per_class=30", "test/cider_d")]["interval"] == paired.BY_SEEDS
    md = files["paired"].read_text()
    assert "**higher**" in md and "no significant difference" in md and "95 %" in md
    assert files["paired_0_correct.png"].is_file() and files["summary"].is_file()


def test_questions_figure_draws_one_panel_per_question_with_data(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.7))
    family = rows[0].family
    questions = (
        ("Accuracy", family, "correct"),
        ("CIDEr-D", family, "test/cider_d"),
        ("Shortcut", "shortcut=True, per_class=30", "worst_group_acc"),  # no such family: no panel
    )
    import matplotlib.image as mpimg

    one = paired.questions_figure(rows, tmp_path / "one.png", questions[:1])
    two = paired.questions_figure(rows, tmp_path / "two.png", questions)
    assert one is not None and two is not None
    h1, w1 = mpimg.imread(one).shape[:2]
    h2, w2 = mpimg.imread(two).shape[:2]
    assert w2 > w1  # two panels side by side; the question without data drew none (else a second row)
    assert paired.questions_figure(rows, tmp_path / "none.png", questions[2:]) is None
    assert paired._in_points("correct") and not paired._in_points("test/cider_d")


def test_settings_are_named_in_words_and_the_plain_loss_goes_unsaid() -> None:
    name = paired.sm.setting_name
    assert name((("model.loss.cam_weight", 0.0), ("model.task", "classifier"))) == "classifier alone"
    assert name((("model.loss.cam_weight", 1.0), ("model.task", "joint"))) == "joint, λ = 1"
    named = name((("model.loss.cam_weight", 0.18), ("model.loss.divergence", "kl"), ("model.loss.scst_epochs", 2.0)))
    assert named == "joint, λ = 0.18, KL divergence"
    plain = (("model.loss.cam_weight", 1.0), ("model.loss.divergence", "js"), ("model.loss.grad_to", "both"))
    assert name(plain) == "joint, λ = 1"  # the schema's defaults: what the headline looks up
    one_side = (("model.loss.cam_weight", 1.0), ("model.loss.grad_to", "captioner"), ("model.task", "joint"))
    assert name(one_side) == "joint, λ = 1, CAM loss trains the captioner only"
    data = (("data.source.per_class", 15.0), ("data.source.shortcut", True), ("model.task", "joint"), ("x.y", 3.0))
    assert name(data) == "joint, 15 images per class, shortcut split, y=3"
    assert name(()) == "all jobs"


def test_headline_answers_each_question_with_its_interval(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.7), n_boot=200)  # a gain of ~20 points
    family = rows[0].family
    questions = (("Test accuracy", family, "correct"), ("Nothing here", "shortcut=True, per_class=30", "correct"))
    table = paired.headline(rows, "joint, λ = 1", questions)
    body = [line for line in table if line.startswith("| Test accuracy")]
    assert len(body) == 1 and "**higher**" in body[0] and "per image, 3 seeds" in body[0]  # in points
    cells = body[0].split("|")
    assert 45 < float(cells[2]) < 55 and 65 < float(cells[3]) < 75, body[0]
    assert not any("Nothing here" in line for line in table)
    assert paired.headline(rows, "joint, λ = 1", questions[1:]) == []


def test_run_level_metrics_need_three_seeds_and_columns_every_job_has(tmp_path: Path) -> None:
    for seed in (1, 2):
        _job(tmp_path / "runs", "nocam", seed, 0.0, 0.5)
        _job(tmp_path / "runs", "cam", seed, 1.0, 0.7)
    extra = tmp_path / "runs" / "cam_s1" / "test_predictions.csv"  # one job has an extra per-image column
    lines = extra.read_text().splitlines()
    extra.write_text("\n".join([lines[0] + ",class_recall", *(line + ",0.5" for line in lines[1:])]) + "\n")
    rows = paired.paired_rows(paired.sm.find_jobs([tmp_path / "runs"]), n_boot=100)
    metrics = {r.metric for r in rows}
    assert "correct" in metrics and "class_recall" not in metrics  # not in every job's table: left out
    assert not any(r.level == paired.BY_SEEDS for r in rows)  # 2 seeds: no run-level comparison


def test_settings_table_has_a_row_per_setting_and_a_column_per_question(tmp_path: Path) -> None:
    # a real gain at λ = 1, none at λ = 0.5
    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.7), ("half", 0.5, 0.5), n_boot=200)
    family = rows[0].family
    questions = (("Accuracy", family, "correct"), ("CIDEr-D", family, "test/cider_d"), ("None", "other", "correct"))
    table = paired.settings_table(rows, family, questions)
    header = next(line for line in table if line.startswith("| setting"))
    assert header.count("|") == 5 and "None" not in header  # setting, 2 questions, seeds
    body = {line.split("|")[1].strip(): line for line in table if line.startswith("| joint")}
    assert set(body) == {"joint, λ = 1", "joint, λ = 0.5"}
    acc_gain = body["joint, λ = 1"].split("|")[2]
    assert acc_gain.strip().startswith("**+") and 15 < float(acc_gain.strip("* ").split()[0]) < 25
    assert not body["joint, λ = 0.5"].split("|")[2].strip().startswith("**")  # no gain: not bold
    assert paired.settings_table(rows, "other", questions) == []


def test_each_other_data_option_with_two_settings_gets_its_own_table(tmp_path: Path) -> None:
    rows = _rows(
        tmp_path / "runs",
        ("nocam", 0.0, 0.5),
        ("cam", 1.0, 0.5),
        ("sc_nocam", 0.0, 0.5, True),
        ("sc_cam", 1.0, 0.8, True),  # a real gain on the shortcut split only
        ("sc_half", 0.5, 0.5, True),
        ("long_nocam", 0.0, 0.5, False, "js", 53),
        ("long_cam", 1.0, 0.5, False, "js", 53),  # one setting: no table of its own
        n_boot=200,
    )
    default, shortcut = "shortcut=False, per_class=30", "shortcut=True, per_class=30"
    questions = (("Accuracy", default, "correct"), ("Worst group", shortcut, "worst_group_acc"))
    tables = paired.option_tables(rows, questions)
    titles = [line for line in tables if line.startswith("## ")]
    assert len(titles) == 1 and shortcut in titles[0], titles
    header = next(line for line in tables if line.startswith("| setting"))
    assert [c.strip() for c in header.split("|")[1:-1]] == ["setting", "Accuracy", "Worst group", "seeds"]
    body = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in tables if line.startswith("| joint")}
    assert set(body) == {"joint, λ = 1", "joint, λ = 0.5"}
    assert body["joint, λ = 1"][0].strip().startswith("**+") and not body["joint, λ = 0.5"][0].strip().startswith("**")
    assert body["joint, λ = 1"][1].strip() != "–" and body["joint, λ = 1"][2].strip() == "3"
    assert paired.option_tables([r for r in rows if r.family != shortcut], questions) == []


def test_lambda_figure_needs_two_weights_of_the_plain_loss(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.6))
    family = rows[0].family
    questions = (("Accuracy", family, "correct"), ("CIDEr-D", family, "test/cider_d"))
    assert paired.lambda_figure(rows, tmp_path / "one.png", questions) is None  # one λ > 0: no dose response
    # λ = 0.5 adds a second weight; the KL variant is not the plain loss, so it draws no point
    rows = _rows(tmp_path / "runs", ("half", 0.5, 0.55), ("kl", 0.25, 0.5, False, "kl"))
    assert {r.setting for r in rows} == {"joint, λ = 0.5", "joint, λ = 1", "joint, λ = 0.25, KL divergence"}
    path = paired.lambda_figure(rows, tmp_path / "two.png", questions)
    assert path is not None and path.stat().st_size > 5000


def test_every_data_option_with_two_weights_gets_its_dose_response(tmp_path: Path) -> None:
    root, out = tmp_path / "runs", tmp_path / "out"
    for seed in (1, 2, 3):
        for lam, p in ((0.0, 0.5), (0.5, 0.55), (1.0, 0.6)):
            _job(root, f"l{lam}", seed, lam, p)
            _job(root, f"sc{lam}", seed, lam, p, shortcut=True)
        for lam in (0.0, 1.0):  # one weight only: no dose response for this option
            _job(root, f"long{lam}", seed, lam, 0.5, epochs=53)
    out.mkdir()
    (out / "lambda_shortcut-False_per_class-15.png").write_bytes(b"")  # an option an earlier summary had
    files = paired.summarize_study([root], out, n_boot=100)
    drawn = sorted(p.name for p in out.glob("lambda*.png"))
    assert drawn == ["lambda_shortcut-False_per_class-30.png", "lambda_shortcut-True_per_class-30.png"]
    assert files["lambda_shortcut-True_per_class-30"].stat().st_size > 5000


def test_each_data_option_is_asked_the_default_questions_then_its_own() -> None:
    default = [m for _, m in paired.family_questions(paired.QUESTIONS[0][1])]
    assert default[0] == "correct" and "worst_group_acc" not in default and len(set(default)) == len(default)
    shortcut = [m for _, m in paired.family_questions("shortcut=True, per_class=50")]
    assert shortcut == [*default, "worst_group_acc"]
    assert [m for _, m in paired.family_questions("shortcut=False, per_class=15, max_epochs=53")] == default
    slug = paired.family_slug("shortcut=False, per_class=15, max_epochs=53")
    assert slug == "shortcut-False_per_class-15_max_epochs-53"


def test_settings_go_in_order_single_task_plain_loss_by_weight_then_variants(tmp_path: Path) -> None:
    names = [
        "joint, λ = 0.3, L1 divergence",
        "joint, λ = 2",
        "joint, λ = 1, CAM loss trains the captioner only",
        "captioner alone",
        "joint, λ = 0.18, KL divergence",
        "joint, λ = 0.25",
        "classifier alone",
    ]
    assert sorted(names, key=paired.setting_order) == [
        "captioner alone",
        "classifier alone",
        "joint, λ = 0.25",
        "joint, λ = 2",
        "joint, λ = 1, CAM loss trains the captioner only",
        "joint, λ = 0.18, KL divergence",
        "joint, λ = 0.3, L1 divergence",
    ]
    # the rows of a study follow it: λ = 1 before the KL variant at a lower weight, which sorted values put first
    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("kl", 0.25, 0.5, False, "kl"), ("cam", 1.0, 0.6))
    assert list(dict.fromkeys(r.setting for r in rows)) == ["joint, λ = 1", "joint, λ = 0.25, KL divergence"]


def test_a_training_length_set_on_the_command_line_is_a_data_option_of_its_own(tmp_path: Path) -> None:
    """Low data trained as many steps (`trainer.max_epochs=53` on its command line) pairs with its own λ = 0, not
    with the default length's, and its setting names stay `joint, λ = 1`."""
    rows = _rows(
        tmp_path / "runs",
        ("nocam", 0.0, 0.5),
        ("cam", 1.0, 0.5),
        ("nocam_long", 0.0, 0.5, False, "js", 53),
        ("cam_long", 1.0, 0.8, False, "js", 53),
    )
    families = {r.family: r.setting for r in rows}
    assert families == {
        "shortcut=False, per_class=30": "joint, λ = 1",
        "shortcut=False, per_class=30, max_epochs=53": "joint, λ = 1",
    }
    long_acc = next(r for r in rows if r.family.endswith("max_epochs=53") and r.metric == "correct")
    assert long_acc.result.significant and 0.2 < long_acc.result.diff < 0.4  # its own baseline: 0.8 − 0.5


def test_figures_colour_a_change_by_whether_it_is_better_not_by_its_sign() -> None:
    from jointcap.analysis.stats import Comparison

    def comp(low: float, high: float) -> Comparison:
        return Comparison((low + high) / 2, low, high, 0.95, 5, 1000, 2000, 0.0, 0.0)

    up, down, unsure = comp(0.01, 0.03), comp(-0.03, -0.01), comp(-0.01, 0.02)
    assert paired.effect_color("correct", up) == "C2"  # more accuracy: better
    assert paired.effect_color("correct", down) == "C3"
    assert paired.effect_color("facts_wrong", down) == "C2"  # fewer false facts: better
    assert paired.effect_color("facts_wrong", up) == "C3"
    assert paired.effect_color("test/disagreement_js", down) == "C1"  # the loss's own target: no better side
    assert {paired.effect_color(m, unsure) for m in ("correct", "facts_wrong")} == {"C0"}


def _as_hard_jobs_with_captions(root: Path, looping: str) -> None:
    """Make `_job` folders hard-data jobs (a fact vocabulary) whose captions in jobs named `looping…` name a part
    twice on every other image ("… crown … cap"), with no part_repeat column (tables from before it existed)."""
    for folder in root.iterdir():
        cfg = json.loads((folder / ".hydra" / "config.yaml").read_text())
        cfg["data"]["source"].update({"_target_": "jointcap.data.synthetic_hard.HardSyntheticSource", "n_classes": 12})
        (folder / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
        table = folder / "test_predictions.csv"
        rows = list(csv.DictReader(open(table)))
        for i, row in enumerate(rows):
            loops = folder.name.startswith(looping) and i % 2 == 0
            row["caption"] = "a red crown and a red cap" if loops else "a red crown and a white eyering"
        with open(table, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def test_part_repeats_are_read_from_the_captions_of_tables_without_the_column(tmp_path: Path) -> None:
    """A study that ran before `part_repeat` existed is compared on it all the same: the summary reads the
    captions with the job's data's fact vocabulary."""
    for seed in (1, 2, 3):
        _job(tmp_path / "runs", "nocam", seed, 0.0, 0.5)
        _job(tmp_path / "runs", "cam", seed, 1.0, 0.5)
    _as_hard_jobs_with_captions(tmp_path / "runs", looping="cam")
    rows = paired.paired_rows(paired.sm.find_jobs([tmp_path / "runs"]), n_boot=200)
    (rep,) = [r for r in rows if r.metric == "part_repeat"]
    assert rep.result.diff == 0.5 and rep.result.significant
    assert paired.effect_color("part_repeat", rep.result) == "C3"  # more repeats is worse


def test_re_decoded_jobs_are_compared_on_the_part_repeats_of_their_new_captions(tmp_path: Path) -> None:
    """rescore_no_repeat's job folders keep their captions in eval/predictions.csv: part_repeat comes from those
    (the only per-image score there: the table's other columns are the original job's)."""
    for seed in (1, 2, 3):
        _job(tmp_path / "runs", "nocam", seed, 0.0, 0.5)
        _job(tmp_path / "runs", "cam", seed, 1.0, 0.5)
    _as_hard_jobs_with_captions(tmp_path / "runs", looping="nocam")
    for folder in (tmp_path / "runs").iterdir():
        (folder / "eval").mkdir()
        (folder / "test_predictions.csv").rename(folder / paired.RE_DECODED_PREDICTIONS)
    rows = paired.paired_rows(paired.sm.find_jobs([tmp_path / "runs"]), n_boot=200)
    assert {r.metric for r in rows if r.level == paired.BY_IMAGES} == {"part_repeat"}
    (rep,) = [r for r in rows if r.metric == "part_repeat"]
    assert rep.result.diff == -0.5 and paired.effect_color("part_repeat", rep.result) == "C2"


def test_a_gain_on_fewer_than_min_seeds_is_listed_but_not_called_significant(tmp_path: Path) -> None:
    for seed in range(1, paired.MIN_SEEDS):  # one seed short
        _job(tmp_path / "runs", "nocam", seed, 0.0, 0.3)
        _job(tmp_path / "runs", "cam", seed, 1.0, 0.9)  # a gain no image bootstrap could miss
    rows = paired.paired_rows(paired.sm.find_jobs([tmp_path / "runs"]), n_boot=200)
    gain = next(r.result for r in rows if r.metric == "correct")
    assert gain.low > 0 and gain.n_seeds == paired.MIN_SEEDS - 1
    assert not gain.significant and gain.verdict().startswith("too few seeds")
    assert all(r.level == paired.BY_IMAGES for r in rows)  # no run-level rows on so few runs
    md = paired.markdown(rows, "t")
    assert "too few seeds" in md and "**higher**" not in md


def test_forest_plot_title_stays_inside_the_figure(tmp_path: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.7), n_boot=50)
    kept: list = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to measure it
    family = "shortcut=True, per_class=50, with a data option name as long as the study's"
    long = [replace(r, family=family) for r in rows]
    assert paired.forest_plot(long, family, "correct", tmp_path / "f.png") is not None
    fig = kept[0]
    renderer = fig.canvas.get_renderer()
    title = fig.axes[0].title.get_window_extent(renderer)
    box = fig.bbox
    assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1
    plt.close(fig)


def test_per_image_rows_are_judged_by_a_t_test_over_seeds_and_read_gzipped_tables(tmp_path: Path) -> None:
    """Issue 28: a per-image score's verdict is a paired t over the runs' means (not a bootstrap over seeds ×
    images), with the hierarchical bootstrap beside it; a study's archived `test_predictions.csv.gz` reads
    the same as the plain table."""
    import gzip
    import shutil

    from jointcap.analysis import stats

    rows = _rows(tmp_path / "runs", ("nocam", 0.0, 0.5), ("cam", 1.0, 0.55))
    row = next(r for r in rows if r.metric == "correct")
    jobs = {(j.folder.name): j for j in paired.sm.find_jobs([tmp_path / "runs"])}
    acc = {name: [jobs[f"{name}_s{s}"].metrics["test/acc1"] for s in (1, 2, 3)] for name in ("nocam", "cam")}
    ref = stats.paired_t(np.array(acc["cam"]), np.array(acc["nocam"]))
    assert (row.result.diff, row.result.low, row.result.high, row.result.p) == pytest.approx(
        (ref.diff, ref.low, ref.high, ref.p)
    )
    assert row.check is not None and row.check.n_boot == 100 and row.check.diff == pytest.approx(ref.diff)
    for job in jobs.values():  # archive every table as the study does
        plain = job.folder / "test_predictions.csv"
        with open(plain, "rb") as src, gzip.open(plain.with_suffix(".csv.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    again = next(r for r in _rows_of(tmp_path / "runs") if r.metric == "correct")
    assert again.result == row.result


def _rows_of(root: Path) -> list[paired.Row]:
    return paired.paired_rows(paired.sm.find_jobs([root]), n_boot=100)
