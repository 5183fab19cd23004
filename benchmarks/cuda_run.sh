#!/usr/bin/env bash
# The GPU check of TorchSink's CUDA path, in one go (about 4 minutes): the CUDA tests, the
# measurements of `python -m benchmarks.cuda`, and the demo on the GPU. For a machine with
# an NVIDIA GPU, a CUDA build of torch, numpy, aiohttp, aiofiles, Pillow and tqdm, and no
# package index: wheels of what else is needed (pytest, pluggy, iniconfig, pytest-asyncio,
# pytest-timeout, simplejpeg; see benchmarks/results/cuda.md) travel in .whl/.
#
#   bash benchmarks/cuda_run.sh [OUTDIR]      # from the repository root
set -uo pipefail
out=${1:-${OUT:-/tmp/asyncfeed-cuda}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/asyncfeed-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/asyncfeed-site:$PWD
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
        --format=csv
    python3 -c "import sys, torch, numpy, aiohttp; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); \
print('numpy', numpy.__version__, 'aiohttp', aiohttp.__version__)"
    echo "cpus $(nproc)"
    git log -1 --format='commit %H' 2>/dev/null
} 2>&1 | tee "$out/env.txt"
# Only the plugins these tests need: the machine's own may not match the carried pytest.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout 420 python3 -m pytest -p pytest_asyncio.plugin \
    -p pytest_timeout -p no:cacheprovider -q --durations=8 tests/sinks tests/test_rebatch.py \
    2>&1 | tee "$out/pytest.txt"
timeout 120 python3 -m benchmarks.cuda_costs --json "$out/costs.json" 2>&1 | tee "$out/costs.txt"
# shellcheck disable=SC2086  # PARTS: a subset of "h2d handoff e2e", default all
timeout 300 python3 -m benchmarks.cuda ${PARTS:-} --json "$out/cuda.json" 2>&1 | tee "$out/bench.txt"
if [ "${DEMO:-1}" = 1 ]; then
    timeout 90 python3 -m asyncfeed demo --device cuda --seconds 15 2>&1 | tr '\r' '\n' \
        | tail -n 14 | tee "$out/demo.txt"
fi
