#!/usr/bin/env bash
# The committed synthetic study (experiments/results/synthetic_study/): the ablation ladder and a
# λ sweep at the reduced +budget=study size, 3 seeds each, two jobs at a time on this CPU.
# The ladder's nocam and cam rungs are λ = 0 and λ = 1, so the λ sweep adds only 0.5 and 2;
# the summary merges both folders by effective configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/synthetic_study}
THREADS=${THREADS:-1}  # CPU threads per job: n_jobs=2 jobs on 2 cores
$PY -m jointcap.run -m +sweep=ladder +budget=study hydra/launcher=local threads=$THREADS hydra.sweep.dir=$OUT/ladder
$PY -m jointcap.run -m +sweep=lambda +budget=study hydra/launcher=local threads=$THREADS hydra.sweep.dir=$OUT/lambda 'model.loss.cam_weight=0.5,2'
$PY experiments/summarize.py $OUT/ladder $OUT/lambda --out experiments/results/synthetic_study \
  --title "Synthetic study (+budget=study): ablation ladder and λ sweep, 3 seeds"
