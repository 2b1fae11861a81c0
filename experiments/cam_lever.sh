#!/usr/bin/env bash
# Issue 25's CAM lever on the hard benchmark (docs/method.md, "the CAM loss moving the CAM's side"): the joint
# model at λ = 1 with `model.loss.grad_to=cam` (the attention Q detached: the loss moves the class weights, the
# shared map and the encoder) started after epoch 4 (`model.loss.cam_start_epoch=4`), at the field-mark study's
# budget, seeds 1-3, one after another in one background lane of one thread. The field study's own λ = 0 and
# λ = 1 (`grad_to=both`) jobs of the same seeds are its comparison (multirun/field_study_study_field/{nocam,cam}).
#   setsid bash experiments/cam_lever.sh      # ~20 min a job alone on a core; results in $OUT/s<seed>/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/cam_lever}
SEEDS=${SEEDS:-1 2 3}
export OMP_NUM_THREADS=1
for seed in $SEEDS; do
  "$PY" -m jointcap.run "seed=$seed" +experiment=hard_cam +budget=study_field data.source.captions=field_marks \
    data.source.test_per_class=30 threads=1 skip_if_done=true model.loss.grad_to=cam model.loss.cam_start_epoch=4 \
    "hydra.run.dir=$OUT/s$seed"
done
