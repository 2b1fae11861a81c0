"""Re-decode a study's caption models with `no_repeat_ngram` (a decoding constraint) and summarise the result.

`python experiments/rescore_no_repeat.py multirun/hard_study --out multirun/hard_study_norepeat [--n 3]`

For every finished job with a captioner under the study folder, runs `python -m jointcap.evaluate` on its
last checkpoint with `no_repeat_ngram=N` (test split, the job's own data and beam) into
`OUT/<same relative path>/eval/`, and writes beside it a job folder the study summary reads: the job's
`.hydra/` and a `results.json` whose metrics are the re-decoded test metrics. Jobs already re-scored are
skipped (rerun after more jobs finish). Then `jointcap.analysis.paired` summarises OUT (run-level metrics,
paired over seeds against λ = 0): what the CAM loss changes in the captions once they cannot loop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jointcap.analysis import paired  # noqa: E402
from jointcap.analysis import summarize as sm  # noqa: E402

EVAL_DIR = paired.RE_DECODED_PREDICTIONS.parent  # where each re-decoding's evaluate output goes: the summary reads it


def rescore(job: Path, out: Path, n: int) -> bool:
    """Evaluate one job's checkpoint with no_repeat_ngram=n into `out`; False if it failed."""
    if (out / "results.json").is_file():
        return True
    cmd = [sys.executable, "-m", "jointcap.evaluate", f"ckpt_path={job}", f"no_repeat_ngram={n}"]
    cmd += ["report.gallery=0", f"hydra.run.dir={out / EVAL_DIR}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"failed: {job}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return False
    report = json.loads((out / EVAL_DIR / "report.json").read_text())
    shutil.copytree(job / ".hydra", out / ".hydra", dirs_exist_ok=True)
    metrics = {f"test/{k}": v for k, v in report["metrics"].items()}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({"objective": "test/cider_d", "no_repeat_ngram": n, "metrics": metrics}, indent=1))
    tmp.replace(out / "results.json")
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=3, help="the n-gram size no caption may repeat")
    p.add_argument("--results", type=Path, default=None, help="where the summary goes (default: OUT)")
    args = p.parse_args(argv)
    jobs = [j for j in sm.find_jobs([args.study]) if j.config.get("model.task") != "classifier"]
    done = sum(rescore(j.folder, args.out / j.folder.relative_to(args.study), args.n) for j in jobs)
    print(f"{done} of {len(jobs)} caption jobs re-scored with no_repeat_ngram={args.n}")
    title = f"Hard study, captions re-decoded with no_repeat_ngram={args.n}"
    for name, path in paired.summarize_study([args.out], args.results or args.out, title).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
