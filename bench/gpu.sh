#!/usr/bin/env bash
# Both speed benchmarks on a CUDA GPU, every layer offloaded.
#
#     bash bench/gpu.sh            # from the repository root, with network access to PyPI
#
# Builds llama-cpp-python with CUDA (nvcc must be on PATH; the build takes
# several minutes), pulls the default experts, then runs bench/batching.py
# and bench/latency.py with all layers on the GPU. Results go to
# bench/gpu-results.txt. Not run for this repository yet: no GPU was lent
# to the sessions that wrote it (see the README's speed section). It needs
# a machine that reaches PyPI and the model mirrors: the GPU machines lent
# to sessions here reach no network and take at most 64 MiB of files per
# call, less than any model file (the 135M model is 98 MB), so there only
# batching.py and draft_cost.py could run, on a GGUF of the same shapes
# with made-up weights written on that machine (speed depends on shapes
# and quantisation, not on the weights' values).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python -c "from complm_cli.experts.llama import TESTED; print(TESTED)")
CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==${version}"
python -c "import llama_cpp; assert llama_cpp.llama_supports_gpu_offload(), 'llama-cpp-python was built without GPU offload'"
complm pull
{
  echo "# $(date -u +%F) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
  python bench/batching.py --gpu-layers -1 --max-seqs 4 --tokens 128
  python bench/draft_cost.py --gpu-layers -1
  echo
  COMPLM_GPU_LAYERS=-1 COMPLM_THREADS=4 python bench/latency.py
} 2>&1 | tee bench/gpu-results.txt
