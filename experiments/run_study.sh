#!/usr/bin/env bash
# The field-mark study (issue 28; its protocol is experiments/README.md, "The field-mark study") in LANES
# background lanes of one job at a time each (`threads=$THREADS` per job), then the archive and the summary:
#   tier 1 (positive control, runs first): joint λ = 0 and the oracle Q arm, default data (SEEDS seeds) and the
#          shortcut split (SEEDS_SMALL seeds)
#   tier 2 (primary): joint λ = 1, the classifier alone, the captioner alone (SEEDS seeds)
#   tier 3 (exploratory): λ = 1 on the shortcut split, grad_to=classifier, 1 − cosine (SEEDS_SMALL seeds)
# Within a tier the seed is outermost, so a study cut short has whole seeds; job k of the list goes to lane
# k mod LANES. Every job has a fixed folder ($OUT/<arm>/seed<NN>) and skip_if_done=true: rerun the same command
# and finished jobs are skipped, a killed one resumes from its last.ckpt (ckpt_path=auto). A job already archived
# in $RESULTS/runs (a fresh clone has no $OUT) is skipped too. A lock on $OUT stops a second copy from running
# the same jobs.
#   experiments/run_study.sh                        # the study: 2 lanes on this 2-core CPU, then the summary
#   PLAN=1 experiments/run_study.sh                 # the job list per lane and the time estimate; runs nothing
#   JOINT_MIN=15 PLAN=1 experiments/run_study.sh    # the estimate at measured per-job minutes
#   TIERS=1 experiments/run_study.sh                # the positive control only
#   nohup experiments/run_study.sh > field_study.log 2>&1 &   # in the background; lanes log to $OUT/lane<k>.log
# Environment: PY, OUT, RESULTS, SEEDS (16), SEEDS_SMALL (6), LANES (2), THREADS (1; empty leaves `threads` out),
# TIERS ("1 2 3"), BUDGET (study_field), DATA (the data overrides of every job), EXTRA (more overrides),
# SUMMARY (1; 0 = no archive/summary at the end), JOINT_MIN / CAPTIONER_MIN / CLASSIFIER_MIN (the estimate).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
BUDGET=${BUDGET:-study_field}  # protocol amendment 1: 8 cross-entropy epochs (conf/budget/study_field.yaml)
OUT=${OUT:-multirun/field_study_$BUDGET}  # the budget in the folder: skip_if_done never mixes budgets
RESULTS=${RESULTS:-experiments/results/field_study}
SEEDS=${SEEDS:-16}
SEEDS_SMALL=${SEEDS_SMALL:-6}
LANES=${LANES:-2}
THREADS=${THREADS-1}
TIERS=${TIERS:-1 2 3}
DATA=${DATA:-data.source.captions=field_marks data.source.test_per_class=30}
EXTRA=${EXTRA:-}
SUMMARY=${SUMMARY:-1}
PLAN=${PLAN:-0}
JOINT_MIN=${JOINT_MIN:-15}  # minutes per job, two lanes on this CPU at study_field (the estimate only)
CAPTIONER_MIN=${CAPTIONER_MIN:-13}
CLASSIFIER_MIN=${CLASSIFIER_MIN:-7}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${THREADS:-1}} PYTHONUNBUFFERED=1

# the arms: NAME OVERRIDE… (their data option is part of the name: *_shortcut)
arm() {
  case $1 in
    nocam | nocam_shortcut) echo "+experiment=hard_nocam" ;;
    oracle | oracle_shortcut) echo "+experiment=hard_cam model.loss.q_source=oracle" ;;
    cam | cam_shortcut) echo "+experiment=hard_cam" ;;
    classifier) echo "+experiment=hard_classifier" ;;
    captioner) echo "+experiment=hard_captioner" ;;
    grad_to_classifier) echo "+experiment=hard_cam model.loss.grad_to=classifier" ;;
    cosine) echo "+experiment=hard_cam model.loss.divergence=cosine model.loss.cam_weight=0.3" ;;
    *) echo "run_study.sh: unknown arm $1" >&2; return 2 ;;
  esac
  case $1 in *_shortcut) echo "data.source.shortcut=true" ;; esac
}

jobs() {  # one line per job, in priority order: TIER ARM SEED
  local tier s
  for tier in $TIERS; do
    for s in $(seq 1 $((SEEDS > SEEDS_SMALL ? SEEDS : SEEDS_SMALL))); do
      case $tier in
        1) if ((s <= SEEDS)); then echo "1 nocam $s"; echo "1 oracle $s"; fi
           if ((s <= SEEDS_SMALL)); then echo "1 nocam_shortcut $s"; echo "1 oracle_shortcut $s"; fi ;;
        2) if ((s <= SEEDS)); then echo "2 cam $s"; echo "2 classifier $s"; echo "2 captioner $s"; fi ;;
        3) if ((s <= SEEDS_SMALL)); then echo "3 cam_shortcut $s"; echo "3 grad_to_classifier $s"; echo "3 cosine $s"; fi ;;
        *) echo "run_study.sh: TIERS has $tier (tiers are 1, 2, 3)" >&2; return 2 ;;
      esac
    done
  done
}

command_of() {  # command_of ARM SEED: the job's command line, one word per line
  local name=$1 seed=$2
  printf '%s\n' -m jointcap.run "seed=$seed" $(arm "$name") "+budget=$BUDGET" $DATA skip_if_done=true \
    "hydra.run.dir=$OUT/$name/seed$(printf %02d "$seed")" ${THREADS:+threads=$THREADS} $EXTRA
}

minutes() {  # minutes ARM: the estimate's per-job time
  case $1 in classifier) echo "$CLASSIFIER_MIN" ;; captioner) echo "$CAPTIONER_MIN" ;; *) echo "$JOINT_MIN" ;; esac
}

LIST=$(jobs)
if [[ "$PLAN" != 0 ]]; then
  awk -v lanes="$LANES" '{print "lane " (NR - 1) % lanes ": tier " $1 " " $2 " seed " $3}' <<<"$LIST"
  total=0
  while read -r _ name _; do total=$(awk -v a="$total" -v b="$(minutes "$name")" 'BEGIN{print a + b}'); done <<<"$LIST"
  awk -v t="$total" -v n="$(wc -l <<<"$LIST")" -v lanes="$LANES" \
    'BEGIN{printf "%d jobs, %.0f job-minutes: ~%.1f h on %d lanes\n", n, t, t / lanes / 60, lanes}'
  exit 0
fi

mkdir -p "$OUT"
exec 9>"$OUT/.run_study.lock"
flock -n 9 || { echo "run_study.sh: another copy is running the jobs of $OUT (lock $OUT/.run_study.lock)" >&2; exit 2; }

lane() {  # lane K: the jobs K, K + LANES, … of the list, one after another
  local k=$1 i=0 tier name seed
  while read -r tier name seed; do
    if ((i++ % LANES == k)); then
      if [[ -f "$RESULTS/runs/$name/seed$(printf %02d "$seed")/results.json" ]]; then
        echo "== lane $k: tier $tier $name seed $seed is archived in $RESULTS/runs — skipped"; continue
      fi
      echo "== lane $k: tier $tier $name seed $seed — $(date -u +%H:%M:%S)"
      mapfile -t cmd < <(command_of "$name" "$seed")
      "$PY" "${cmd[@]}" || echo "!! lane $k: $name seed $seed failed (rc $?); rerun the script to retry it"
    fi
  done <<<"$LIST"
  echo "== lane $k done — $(date -u +%H:%M:%S)"
}

echo "field study: $(wc -l <<<"$LIST") jobs in $LANES lanes into $OUT — $(date -u +%H:%M:%S)"
for ((k = 0; k < LANES; k++)); do
  lane "$k" >>"$OUT/lane$k.log" 2>&1 &  # appended: a resumed study keeps the log of its first start
done
wait
if [[ "$SUMMARY" != 0 ]]; then
  "$PY" experiments/summarize_study.py "$RESULTS" --archive "$OUT"
fi
