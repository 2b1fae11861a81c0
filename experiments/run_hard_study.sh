#!/usr/bin/env bash
# The hard-benchmark study (issue 11) at +budget=study_hard: the ladder, λ ∈ {0, 0.25, 0.5, 1, 2}, grad_to,
# the divergences, and the shortcut and low-data options (classifier · λ = 0 · λ = 1), SEEDS seeds each,
# JOBS jobs at a time through Hydra's joblib launcher (hydra/launcher=local), then the paired summary.
#
# Resumable: every sweep writes into a FIXED folder ($OUT/<sweep>/<job number>_<overrides>) with
# skip_if_done=true, so rerunning the same command skips the jobs whose results.json exists and
# resumes the unfinished ones from their last.ckpt (ckpt_path=auto). Keep SEEDS and the settings the
# same between reruns: Hydra numbers the jobs in sweep order, and the folders carry those numbers.
#   experiments/run_hard_study.sh                                   # 2-core CPU: ~95 jobs, 2 at a time
#   JOBS=4 EXTRA="trainer=gpu data.num_workers=4" experiments/run_hard_study.sh   # a GPU machine, same sweep
#   ONLY="ladder lambda" experiments/run_hard_study.sh              # a subset of the sweeps
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/hard_study}
SEEDS=${SEEDS:-1,2,3,4,5}
JOBS=${JOBS:-2}
BUDGET=${BUDGET:-study_hard}
EXTRA=${EXTRA:-}
ONLY=${ONLY:-ladder lambda grad_to divergence shortcut lowdata}
RESULTS=${RESULTS:-experiments/results/hard_study}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per job on the CPU

sweep() {  # sweep NAME OVERRIDE…: one Hydra multirun in $OUT/NAME, finished jobs skipped
  local name=$1
  shift
  case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  $PY -m jointcap.run -m "$@" +budget="$BUDGET" seed="$SEEDS" skip_if_done=true hydra/launcher=local \
    hydra.launcher.n_jobs="$JOBS" hydra.sweep.dir="$OUT/$name" $EXTRA
}

sweep ladder '+experiment=hard_classifier,hard_captioner,hard_nocam,hard_cam'       # λ = 0 and λ = 1 live here
sweep lambda +experiment=hard_cam 'model.loss.cam_weight=0.25,0.5,2'
sweep grad_to +experiment=hard_cam 'model.loss.grad_to=captioner,classifier'
sweep divergence +experiment=hard_cam 'model.loss.divergence=kl,l1,l2,cosine'
sweep shortcut '+experiment=hard_classifier,hard_nocam,hard_cam' data.source.shortcut=true
sweep lowdata '+experiment=hard_classifier,hard_nocam,hard_cam' data.source.per_class=15
$PY experiments/summarize_hard.py "$OUT" --out "$RESULTS" \
  --title "Hard synthetic study (+budget=$BUDGET, seeds $SEEDS)"
