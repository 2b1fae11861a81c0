#!/usr/bin/env bash
# Issue 25's grounding lever on the hard benchmark (docs/method.md, "supervised word attention"): the captioner's
# attention at a word that names a part trained toward that part's mask (`model.loss.part_attention=1`), at the
# field-mark study's budget, seeds 1-3, one job after another in one background lane of one thread. ARM picks
#   nocam  λ = 0 (compare: the field study's λ = 0 jobs, multirun/field_study_study_field/nocam)
#   cam    λ = 1 with the CAM lever (grad_to=cam from epoch 4; compare: multirun/cam_lever)
#   ARM=nocam setsid bash experiments/part_attention_lever.sh   # ~20 min a job alone on a core; $OUT/<arm>/s<seed>/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
ARM=${ARM:-nocam}
OUT=${OUT:-multirun/part_lever}
SEEDS=${SEEDS:-1 2 3}
WEIGHT=${WEIGHT:-1.0}
export OMP_NUM_THREADS=1
case "$ARM" in
  nocam) extra=(+experiment=hard_nocam) ;;
  cam) extra=(+experiment=hard_cam model.loss.grad_to=cam model.loss.cam_start_epoch=4) ;;
  *) echo "ARM must be nocam or cam, not '$ARM'" >&2; exit 2 ;;
esac
for seed in $SEEDS; do
  "$PY" -m jointcap.run "seed=$seed" "${extra[@]}" +budget=study_field data.source.captions=field_marks \
    data.source.test_per_class=30 threads=1 skip_if_done=true "model.loss.part_attention=$WEIGHT" \
    "hydra.run.dir=$OUT/$ARM/s$seed"
done
