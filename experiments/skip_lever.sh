#!/usr/bin/env bash
# Issue 25's lever check on the hard benchmark (docs/method.md, "a stem skip for the captioner"): the joint model
# at λ = 0 with and without the captioner's stem skip, at the field-mark study's budget, seeds 1 and 2, in two
# background lanes of one thread each. The skip is now in the hard presets, so "no skip" passes skip_dim=0.
#   bash experiments/skip_lever.sh            # ~35 min on this 2-core CPU; results in $OUT/<arm>_s<seed>/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/skip_lever}
export OMP_NUM_THREADS=1
job() {  # job NAME SEED OVERRIDES…
  local name=$1 seed=$2; shift 2
  "$PY" -m jointcap.run "seed=$seed" +experiment=hard_nocam +budget=study_field data.source.captions=field_marks \
    data.source.test_per_class=30 threads=1 skip_if_done=true "$@" "hydra.run.dir=$OUT/${name}_s$seed"
}
(job stem_skip 1; job stem_skip 2) &
(job no_skip 1 model.embedding.skip_dim=0; job no_skip 2 model.embedding.skip_dim=0) &
wait
