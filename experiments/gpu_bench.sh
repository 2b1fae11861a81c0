#!/usr/bin/env bash
# The GPU bench of issue 14 in one short run: `python -m jointcap.tools.bench` at the default (64 px) profile and
# at the paper profile (cub_cam's ResNet-50, output stride 16, 224 px, batch 64, bf16, channels_last), tables
# written to experiments/results/bench/<name>.{md,json} and, when $OUT is set, to $OUT too, with the logs.
# Expected ~3 min on an H200, at most 7.7 min (each stage has its own time limit, so a slow one cannot eat the others;
# COMPILE=1 adds up to 4 min: run it as a second call).
#
#   bash experiments/gpu_bench.sh prepare   # on the CPU machine, once: copies the pure-Python packages the device
#                                           # image lacks (hydra-core, omegaconf, antlr4, pycocoevalcap's BLEU/ROUGE/
#                                           # CIDEr) from this venv into .gpu_site/ (git-ignored, ~2 MB)
#   bash experiments/gpu_bench.sh           # on the GPU machine; the device tool needs carry=[".gpu_site"]
#
# Environment: NAME (table name prefix, default h200), PY (python, default python3), STEPS/REPEATS (timed steps and
# repeats per training arm, default 20/3), PAPER_STEPS (default 10), COMPILE=1 adds a paper run with model.compile=true,
# DEVICE=cpu and EXTRA="…" (bench flags for every stage) for a dry run of this script on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SITE=$ROOT/.gpu_site

if [[ "${1:-}" == "prepare" ]]; then
  SRC=$(${PY:-.venv/bin/python} -c "import hydra, os; print(os.path.dirname(os.path.dirname(hydra.__file__)))") || exit 1
  rm -rf "$SITE" && mkdir -p "$SITE/pycocoevalcap" || exit 1
  for pkg in hydra omegaconf antlr4; do cp -r "$SRC/$pkg" "$SITE/" || exit 1; done
  # pycocoevalcap is 101 MB with its Java jars (METEOR, SPICE); row 5 needs only the pure-Python scorers.
  cp -r "$SRC"/pycocoevalcap/{bleu,rouge,cider} "$SITE/pycocoevalcap/" || exit 1
  find "$SITE" -name __pycache__ -prune -exec rm -rf {} +
  echo "prepared $SITE ($(du -sh "$SITE" | cut -f1)); run the device with carry=[\".gpu_site\"]"
  exit 0
fi

PY=${PY:-python3}
NAME=${NAME:-h200}
DEST=$ROOT/experiments/results/bench
mkdir -p "$DEST"
[[ -d "$SITE" ]] && export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" || export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 JOINTCAP_DATA=${JOINTCAP_DATA:-/tmp/jointcap-gpu-bench} WANDB_MODE=offline HYDRA_FULL_ERROR=1
T0=$(date +%s)
say() { echo "[gpu_bench +$(( $(date +%s) - T0 ))s] $*"; }

say "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'); $(nproc) CPUs"
DEVICE=${DEVICE:-cuda}
$PY -c "import torch, lightning, hydra, omegaconf; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'lightning', lightning.__version__)" || { say "environment check failed (did you run 'prepare' and carry .gpu_site?)"; exit 2; }

status=0
stage() {  # stage NAME LIMIT_S ARGS…: one bench run, its table into the repo and $OUT
  local name=$1 limit=$2; shift 2
  say "stage $name: python -m jointcap.tools.bench $* (limit ${limit}s)"
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  timeout "$limit" $PY -m jointcap.tools.bench --device "$DEVICE" --out "$DEST/$name" "$@" ${EXTRA:-} 2>&1 | tee "$DEST/$name.log"
  local rc=${PIPESTATUS[0]}
  [[ $rc -ne 0 ]] && { say "stage $name failed or timed out (rc $rc)"; status=1; }
  if [[ -n "${OUT:-}" ]]; then  # at most 8 files come back: the tables, and one log of every stage
    cp "$DEST/$name".md "$DEST/$name".json "$OUT/" 2>/dev/null
    { echo "=== $name (rc $rc)"; cat "$DEST/$name.log"; } >>"$OUT/gpu_bench.log"
  fi
  say "stage $name done"
}

stage "$NAME" 120 --steps "${STEPS:-20}" --repeats "${REPEATS:-3}" --caption-repeats 1
# The caption-metrics row is a CPU figure and the same in both profiles: measured once, above.
stage "${NAME}_paper" 240 --profile paper --steps "${PAPER_STEPS:-10}" --repeats "${REPEATS:-3}" --skip-caption-metrics
# Bigger GPU batches amortise the captioner's per-word launches: the default model at batch 256 (12 batches of the
# 4000 synthetic training images).
stage "${NAME}_b256" 100 --steps 10 --repeats 2 --skip-caption-metrics --no-launches data.batch_size=256
if [[ "${COMPILE:-0}" == 1 ]]; then
  stage "${NAME}_paper_compiled" 240 --profile paper --steps "${PAPER_STEPS:-10}" --repeats 2 --skip-caption-metrics model.compile=true
fi
say "all stages done (status $status); tables in $DEST${OUT:+ and $OUT}"
exit $status
