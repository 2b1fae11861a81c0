#!/usr/bin/env bash
# The field-mark study (issue 28; protocol: experiments/README.md) on a GPU machine: run_study.sh's job list —
# same tiers, arms and seeds — with LANES jobs sharing the GPU at once (each model is small: ~1–2 GiB of GPU
# memory at batch 32), THREADS intra-op threads each, into its own folders so CPU results are not mixed in.
# Resumable like the CPU study (rerun the same command).
#   bash experiments/gpu_study.sh                     # on the GPU machine, from the repository root
#   TIERS=1 bash experiments/gpu_study.sh             # the positive control first
#   PLAN=1 JOINT_MIN=2 CAPTIONER_MIN=1.5 CLASSIFIER_MIN=1 bash experiments/gpu_study.sh   # the estimate
# On the lent device machine (whose image lacks hydra/omegaconf): `bash experiments/gpu_bench.sh prepare` here
# first, then run this with the device tool's carry=[".gpu_site"]; .gpu_site/ goes on PYTHONPATH when present.
# A lent device has 15 minutes in all: enough for TIERS=1 SEEDS=… of a first slice at most, not the study.
set -euo pipefail
cd "$(dirname "$0")/.."
export LANES=${LANES:-8}
export THREADS=${THREADS-2}
export OUT=${OUT:-multirun/field_study_gpu}
export RESULTS=${RESULTS:-experiments/results/field_study_gpu}
export EXTRA="trainer=gpu data.num_workers=1 ${EXTRA:-}"
export PY=${PY:-python3}
export JOINTCAP_DATA=${JOINTCAP_DATA:-/tmp/jointcap-gpu-study}
if [[ -d .gpu_site ]]; then export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"; fi
exec bash experiments/run_study.sh
