#!/usr/bin/env bash
# Every GPU measurement the issues ask for, one part per device call: each part is sized to end
# well inside one 10-minute call on an H100, and the session's 30 device minutes hold
# stage-free parts training, tta-resnet20, tta-vgg16_bn, matching, woodfisher (in that order of
# importance). On the development machine, once:
#     bash benchmarks/gpu_session.sh stage      # ../shared/data/cifar10 → .gpu/data (ignored)
# then one device call per part (the CIFAR-10 copy travels in the carried .gpu folder):
#     run(command="bash benchmarks/gpu_session.sh training", carry=[".gpu"])
# Each part writes $OUT/<part>.json and $OUT/<part>.log (and $OUT/gpu.txt); copy the figures
# into benchmarks/RESULTS.md with the date, the device and the command.
# Local smoke run of a part on the CPU:
#     PYTHON=.venv/bin/python SKIP_INSTALL=1 BENCH_DEVICE=cpu BENCH_ARGS=--quick \
#         bash benchmarks/gpu_session.sh matching
set -euo pipefail
part=${1:?usage: gpu_session.sh stage|training|training-compile|tta-resnet20|tta-vgg16_bn|matching|woodfisher|woodfisher-resnet50|zipit|soup}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
dev=${BENCH_DEVICE:-cuda}
extra=${BENCH_ARGS:-}
out=${OUT:-runs/gpu}
mkdir -p "$out"

if [ "$part" = stage ]; then
    src=${WEIGHTLAB_TEST_DATA:-$root/../shared/data}
    mkdir -p .gpu/data/cifar10
    cp "$src/cifar10/cifar10_jpeg_bytes.npz" "$src/cifar10/materialize.py" .gpu/data/cifar10/
    du -sh .gpu
    exit 0
fi

if [ -z "${SKIP_INSTALL:-}" ]; then
    # the device's python already has torch, torchvision, pluggy, typer, rich, scipy, numpy and
    # safetensors: install weightlab and its plugins over them, resolving nothing
    plugin_args=()
    for p in plugins/*/; do plugin_args+=(-e "$p"); done
    "$py" -m pip install -q --no-build-isolation --no-deps -e . "${plugin_args[@]}"
fi
if [ -d .gpu/data ]; then export WEIGHTLAB_TEST_DATA=$root/.gpu/data; fi
export WEIGHTLAB_TEST_CACHE=${WEIGHTLAB_TEST_CACHE:-/tmp/weightlab-cache} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$py" -c 'import torch; print("torch", torch.__version__)'; } > "$out/gpu.txt"

bench() {  # bench MODULE ARGS…: log to $out/$part.log, results to $out/$part.json
    local module=$1
    shift
    # shellcheck disable=SC2086  # $extra is a word list on purpose
    "$py" -m "benchmarks.$module" --device "$dev" "$@" $extra --out "$out/$part.json" 2>&1 \
        | tee -a "$out/$part.log"
}

case $part in
    training) bench bench_training --skip c ;;
    training-compile) bench bench_training --skip c --compile --models resnet20,resnet20_4x ;;
    tta-resnet20) bench bench_training --skip a,b --models resnet20 ;;
    tta-vgg16_bn) bench bench_training --skip a,b --models vgg16_bn ;;
    matching) bench bench_matching ;;
    woodfisher) bench bench_woodfisher ;;
    woodfisher-resnet50) bench bench_woodfisher --model resnet50 --block-size 2000 ;;
    zipit) bench bench_zipit ;;
    soup) bench bench_soup ;;
    *) echo "gpu_session.sh: unknown part '$part'" >&2; exit 2 ;;
esac
