#!/usr/bin/env bash
# The hard-benchmark study (issue 11) at +budget=study_hard, SEEDS seeds per setting, JOBS jobs at a time
# through Hydra's joblib launcher (hydra/launcher=local), then the paired summary. Families run in order of
# priority, each one Hydra multirun with the seed outermost (every setting's seed 1, then seed 2, …), so a
# study cut short still has whole seeds to pair:
#   classifier  the classifier alone, default and low-data       (the ladder's first rung)
#   hard      joint λ = 0 · joint λ = 1                          (accuracy, captions, localisation)
#   shortcut  the same on the shortcut split                     (worst-group accuracy)
#   lowdata   the same at 15 training images per class, same epochs (low-data accuracy)
#   classifier_shortcut  the classifier alone on the shortcut split
#   captioner the captioner alone                                (the ladder's last rung)
#   lambda    λ ∈ {0.25, 0.5, 2}
#   grad_to   the CAM loss's gradient into the captioner only / the classifier only
#   divergence KL, L1, L2, 1−cosine at the gradient scale of JS at λ = 1 (λ = 1 / ratio; docs/method.md)
#   scst_cam  λ = 1 with the CAM loss in the cross-entropy epochs only (not in the self-critical ones)
#   lowdata_steps  the low-data option trained as many steps as the default (53 epochs of 1,500 images, the
#             last 7 self-critical ≈ 16 of 5,000 and 2): low data without the step starvation of `lowdata`
#   classifier_lowdata_steps  the classifier alone on lowdata_steps (the ladder's first rung there)
#   grad_to_lowdata_steps     grad_to ∈ {captioner, classifier} on lowdata_steps
#   grad_to_shortcut  grad_to = classifier (the variant that localised on the default data) on the shortcut split
#   lambda_lowdata_steps      λ ∈ {0.5, 2} on lowdata_steps (the dose response where λ = 1 helped)
#   divergence_cosine_lowdata_steps  1 − cosine (the divergence that localised) on lowdata_steps
#   lambda_quarter_lowdata_steps     λ = 0.25 on lowdata_steps (completes the dose response 0 … 2 there)
#   divergence_{kl,l1,l2}_lowdata_steps  the other divergences on lowdata_steps, at matched scale
#   lambda_shortcut, grad_to_captioner_shortcut, divergence_*_shortcut  the rest of the protocol on the shortcut split
#
# Resumable: every family writes into a FIXED folder ($OUT/<family>/<job number>_<overrides>) with
# skip_if_done=true, so rerunning the same command skips the jobs whose results.json exists and resumes the
# unfinished ones from their last.ckpt (ckpt_path=auto). Keep SEEDS the same between reruns: Hydra numbers
# the jobs in sweep order, and the folders carry those numbers.
#   experiments/run_hard_study.sh                                   # 2-core CPU, 2 jobs at a time
#   ONLY="hard lowdata" experiments/run_hard_study.sh               # some families
#   JOBS=8 EXTRA="trainer=gpu data.num_workers=2" experiments/run_hard_study.sh   # a GPU machine, same sweep
#   SUMMARY=0 ONLY=lambda experiments/run_hard_study.sh             # no summary at the end (a lane of several families)
# THREADS: each job's CPU threads (the run's `threads` setting, default 1): cores ÷ (JOBS × lanes running at once),
# e.g. 1 for 2 jobs on 2 cores or for two lanes of one job each; `auto` divides the cores by JOBS itself but
# knows nothing of other lanes (docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/hard_study}
SEEDS=${SEEDS:-1,2,3,4,5}
JOBS=${JOBS:-2}
BUDGET=${BUDGET:-study_hard}
EXTRA=${EXTRA:-}
ONLY=${ONLY:-classifier hard lowdata shortcut captioner lambda grad_to divergence scst_cam}
RESULTS=${RESULTS:-experiments/results/hard_study}
SUMMARY=${SUMMARY:-1}
JOINT=+experiment=hard_nocam,hard_cam
# override groups the families share (unquoted below: each expands to its words)
LOWDATA_STEPS="data.source.per_class=15 trainer.max_epochs=53 model.loss.scst_epochs=7"  # 15 images per class, as many steps as the default
# matched gradient scale: λ = 1 / (the divergence's gradient norm ÷ JS's) at sharpness 1 (docs/method.md)
KL="model.loss.divergence=kl model.loss.cam_weight=0.18"
L1="model.loss.divergence=l1 model.loss.cam_weight=0.3"
L2="model.loss.divergence=l2 model.loss.cam_weight=1.75"
COSINE="model.loss.divergence=cosine model.loss.cam_weight=0.3"
# `++data.source.KEY=…` with a swept +experiment: Hydra first composes the sweep's base config without the swept
# values, whose default data (synthetic) has no such key; `++` adds it there and overrides it in every job.
THREADS=${THREADS:-1}  # one thread per job on the CPU

family() {  # family NAME OVERRIDE…: one Hydra multirun in $OUT/NAME, seed outermost, finished jobs skipped
  local name=$1
  shift
  case " $ONLY " in *" $name "* | *" ${name%%_[a-z0-9]*} "*) ;; *) return 0 ;; esac  # a group runs its members: divergence = divergence_*, grad_to = grad_to_*, lowdata = lowdata_*
  echo "== $name: $* (seeds $SEEDS) — $(date -u +%H:%M:%S)"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  $PY -m jointcap.run -m seed="$SEEDS" "$@" +budget="$BUDGET" skip_if_done=true hydra/launcher=local \
    hydra.launcher.n_jobs="$JOBS" threads="$THREADS" hydra.sweep.dir="$OUT/$name" $EXTRA
}

family classifier +experiment=hard_classifier data.source.per_class=50,15
family hard "$JOINT"
family shortcut "$JOINT" ++data.source.shortcut=true
family lowdata "$JOINT" ++data.source.per_class=15
family classifier_shortcut +experiment=hard_classifier data.source.shortcut=true
family captioner +experiment=hard_captioner
family lambda +experiment=hard_cam 'model.loss.cam_weight=0.25,0.5,2'
family grad_to +experiment=hard_cam 'model.loss.grad_to=captioner,classifier'
family divergence_kl +experiment=hard_cam $KL
family divergence_l1 +experiment=hard_cam $L1
family divergence_l2 +experiment=hard_cam $L2
family divergence_cosine +experiment=hard_cam $COSINE
family scst_cam +experiment=hard_cam model.loss.scst_cam=false
family lowdata_steps "$JOINT" ++data.source.per_class=15 trainer.max_epochs=53 model.loss.scst_epochs=7
family classifier_lowdata_steps +experiment=hard_classifier data.source.per_class=15 trainer.max_epochs=53
family grad_to_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS 'model.loss.grad_to=captioner,classifier'
family grad_to_shortcut +experiment=hard_cam data.source.shortcut=true model.loss.grad_to=classifier
family lambda_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS 'model.loss.cam_weight=0.5,2'
family divergence_cosine_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS $COSINE
family lambda_quarter_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS model.loss.cam_weight=0.25
family divergence_kl_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS $KL
family divergence_l1_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS $L1
family divergence_l2_lowdata_steps +experiment=hard_cam $LOWDATA_STEPS $L2
family lambda_shortcut +experiment=hard_cam data.source.shortcut=true 'model.loss.cam_weight=0.25,0.5,2'
family grad_to_captioner_shortcut +experiment=hard_cam data.source.shortcut=true model.loss.grad_to=captioner
family divergence_kl_shortcut +experiment=hard_cam data.source.shortcut=true $KL
family divergence_l1_shortcut +experiment=hard_cam data.source.shortcut=true $L1
family divergence_l2_shortcut +experiment=hard_cam data.source.shortcut=true $L2
family divergence_cosine_shortcut +experiment=hard_cam data.source.shortcut=true $COSINE
if [ "$SUMMARY" != 0 ]; then  # SUMMARY=0: no summary at the end (lanes running families one after another)
  $PY experiments/summarize_hard.py "$OUT" --out "$RESULTS" \
    --title "Hard synthetic study (+budget=$BUDGET, seeds $SEEDS)"
fi
