#!/usr/bin/env bash
# The hard-benchmark study (issue 11) on a GPU machine: the same sweep as run_hard_study.sh — every family,
# SEEDS seeds — with JOBS jobs sharing the GPU at once (each model is small: ~1–2 GiB of GPU memory at batch
# 32), into its own folders so the CPU study's results are not mixed in. Resumable like the CPU study.
#   bash experiments/gpu_study.sh                  # on the GPU machine, from the repository root
#   JOBS=12 SEEDS=1,2,3,4,5,6,7,8,9,10 bash experiments/gpu_study.sh
# On the lent device machine (whose image lacks hydra/omegaconf): `bash experiments/gpu_bench.sh prepare` here
# first, then run this with the device tool's carry=[".gpu_site"]; .gpu_site/ goes on PYTHONPATH when present.
# Not yet run: no GPU was lent to the session that prepared it, and the whole sweep (~160 jobs) needs far more
# than one device call; ONLY="hard shortcut" or fewer SEEDS give a first slice.
set -euo pipefail
cd "$(dirname "$0")/.."
export JOBS=${JOBS:-8}
export THREADS=${THREADS:-2}  # CPU threads per job: JOBS × 2 of the 16 cores
export OUT=${OUT:-multirun/hard_study_gpu}
export RESULTS=${RESULTS:-experiments/results/hard_study_gpu}
export EXTRA="trainer=gpu data.num_workers=1 ${EXTRA:-}"
export PY=${PY:-python3}
if [[ -d .gpu_site ]]; then export PYTHONPATH="$PWD/.gpu_site:${PYTHONPATH:-}"; fi
exec bash experiments/run_hard_study.sh
