#!/usr/bin/env bash
# Issue 25 on the default data: does `+experiment=synthetic_describe` say what varies inside a class, over seeds?
# Each seed trains in its own lane (one thread), then its best checkpoint is decoded greedily and with beam 3
# (`python -m jointcap.evaluate`), and experiments/summarize_describe.py prints the table of docs/method.md.
#   setsid bash experiments/describe_lever.sh      # ~25 min a seed alone on a core; results in $OUT/s<seed>/
#   EPOCHS=1 EXTRA="model.loss.scst_repeat_penalty=1" OUT=multirun/describe_rep1 setsid bash experiments/describe_lever.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-multirun/describe_lever}
SEEDS=${SEEDS:-0 1 2}
PRESET=${PRESET:-synthetic_describe}
read -r -a EXTRA <<< "${EXTRA:-}"  # more overrides for every seed, e.g. EXTRA="trainer.max_epochs=5 model.loss.scst_epochs=1"
# FROM: start each seed from a checkpoint, `{seed}` replaced by the seed, e.g. the cross-entropy end of another run:
#   FROM=multirun/describe_lever3/s{seed}/ce_end_epoch8.ckpt EXTRA="model.loss.scst_xe_weight=0.5" OUT=… bash …
FROM=${FROM:-}
# EPOCHS=1 keeps every epoch's checkpoint in $OUT/s<seed>/epochs/ (Lightning's ModelCheckpoint, save_top_k=-1):
# the cross-entropy end (epoch=7-…) is then a FROM for levers of the self-critical epochs alone
EPOCHS=${EPOCHS:-0}
if [ "$EPOCHS" != 0 ]; then
  EXTRA+=("+callbacks.epochs._target_=lightning.pytorch.callbacks.ModelCheckpoint" "+callbacks.epochs.monitor=null"
    "+callbacks.epochs.dirpath='\${hydra:runtime.output_dir}/epochs'" "+callbacks.epochs.save_top_k=-1")
fi
export OMP_NUM_THREADS=1
lane() {
  local seed=$1 dir="$OUT/s$1" from=()
  [ -z "$FROM" ] || from=("ckpt_path='${FROM//\{seed\}/$seed}'")  # quoted: Lightning's names hold '=
  "$PY" -m jointcap.run "seed=$seed" "+experiment=$PRESET" threads=1 skip_if_done=true "hydra.run.dir=$dir" \
    ${from[@]+"${from[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
  for beam in 1 3; do
    [ -f "$dir/eval_beam$beam/report.json" ] || "$PY" -m jointcap.evaluate "ckpt_path=$dir" "beam_size=$beam" \
      threads=1 "hydra.run.dir=$dir/eval_beam$beam"
  done
}
for seed in $SEEDS; do lane "$seed" > "$OUT.s$seed.log" 2>&1 & done
wait
"$PY" experiments/summarize_describe.py "$OUT"
