#!/usr/bin/env bash
# The whole GPU lease in one device call (issue 18): install weightlab over the device's torch,
# write CIFAR-10 out of the carried JPEG copy, then run benchmarks/gpu_session.py — parts (a)
# speed, (b) ResNet-20 + REPAIR, (c) VGG16-BN pruning (+ VGG16 PFM), (d) ResNet-20×4 + REPAIR in
# priority order inside one time guard, each part's JSON written to $OUT as it finishes.
#
# Once, in the checkout that calls the device tool (the files must travel from there):
#     bash benchmarks/gpu_session.sh stage     # ../shared/data/cifar10 → .gpu/data (ignored)
# then one call (see docs/results.md, "The GPU session"):
#     run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=540)
# $OUT gets session.log, a.json … d.json and checkpoints.tar.N (≤ 8 files, ≤ 16 MiB each).
# The budget (SESSION_BUDGET_S, 480 s) counts from this script's start, install included;
# options after `run` go to the driver (--parts b,c to rerun only those, --budget is ignored).
# CPU rehearsal (what tests/test_gpu_session.py runs):
#     PYTHON=.venv/bin/python SKIP_INSTALL=1 OUT=/tmp/s bash benchmarks/gpu_session.sh run \
#         --size tiny --device cpu
set -euo pipefail
start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
mode=${1:-run}
[ $# -gt 0 ] && shift

if [ "$mode" = stage ]; then
    src=${WEIGHTLAB_TEST_DATA:-$root/../shared/data}
    mkdir -p .gpu/data/cifar10
    cp "$src/cifar10/cifar10_jpeg_bytes.npz" "$src/cifar10/materialize.py" .gpu/data/cifar10/
    # what travels: tracked and untracked-not-ignored files, plus the carried .gpu
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
    gpu=$(du -sb .gpu | cut -f1)
    total=$((tree + gpu))
    echo "travels: tree $((tree / 1024)) KiB + .gpu $((gpu / 1024)) KiB = $((total / 1048576)) MiB (limit 64 MiB)"
    if [ "$total" -gt $((64 * 1048576)) ]; then
        echo "gpu_session.sh: $((total / 1048576)) MiB would travel; the device tool takes 64 MiB" >&2
        exit 1
    fi
    exit 0
fi
if [ "$mode" != run ]; then
    echo "gpu_session.sh: unknown mode '$mode'; expected stage or run" >&2
    exit 2
fi

out=${OUT:-runs/gpu}
mkdir -p "$out"

session() {
    export WEIGHTLAB_TEST_CACHE=${WEIGHTLAB_TEST_CACHE:-/tmp/weightlab-cache}
    local cifar=$WEIGHTLAB_TEST_CACHE/cifar10 writer=
    if [ -f "$cifar/cifar-10-batches-py/test_batch" ]; then
        export WEIGHTLAB_DATA=$cifar  # written by an earlier call on this machine
    elif [ -z "${SKIP_INSTALL:-}" ] && [ -f .gpu/data/cifar10/cifar10_jpeg_bytes.npz ]; then
        # on the device: decode the carried CIFAR-10 copy while pip installs
        "$py" .gpu/data/cifar10/materialize.py "$cifar" &
        writer=$!
    fi
    if [ -z "${SKIP_INSTALL:-}" ]; then
        # the device's python has torch, torchvision, pluggy, typer, rich, scipy, numpy,
        # scikit-learn, matplotlib and safetensors (no wandb, not needed): install weightlab and
        # its plugins over them, resolving and downloading nothing
        plugin_args=()
        for p in plugins/*/; do plugin_args+=(-e "$p"); done
        if ! "$py" -m pip install -q --no-build-isolation --no-deps --no-compile -e . \
                "${plugin_args[@]}"; then
            # an image whose setuptools cannot build editable installs: a plain install
            echo "editable install failed; installing weightlab as a plain package"
            "$py" -m pip install -q --no-build-isolation --no-deps --no-compile . plugins/*/
        fi
        echo "installed weightlab in $(($(date +%s) - start)) s"
    fi
    export PYTHONUNBUFFERED=1 WEIGHTLAB_DEBUG=1
    # the carried CIFAR-10 copy (without the writer above, the driver writes it out in the
    # standard layout if a part needs it)
    if [ -f .gpu/data/cifar10/cifar10_jpeg_bytes.npz ]; then
        export WEIGHTLAB_TEST_DATA=$root/.gpu/data
    fi
    if [ -n "$writer" ]; then
        wait "$writer" && export WEIGHTLAB_DATA=$cifar
        echo "CIFAR-10 written after $(($(date +%s) - start)) s"
    fi
    { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null \
        || true; "$py" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; }
    echo "ready after $(($(date +%s) - start)) s"
    "$py" -m benchmarks.gpu_session --deadline $((start + ${SESSION_BUDGET_S:-480})) "$@"
}

# everything to the log that comes back too (a command stopped at its limit keeps it); one
# compound command ending in exit, so bash reads nothing after it (an edit during a run is safe)
{ session "$@" 2>&1 | tee -a "$out/session.log"; exit; }
