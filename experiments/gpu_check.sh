#!/usr/bin/env bash
# The speed frontier on one GPU, in one command of under 8 minutes:
#
#   bash experiments/gpu_check.sh MNIST_DIR OUT_DIR
#
# MNIST_DIR holds the four MNIST IDX files (gzipped or not). In order, each step with its
# own time limit, every step's JSON and log in OUT_DIR:
#   device     jax's devices and nvidia-smi                    device.json
#   benchmark  train step at batch 128, 512, 2048; an epoch    benchmark.json
#              of the host and the scan loop (synthetic data)
#   train      10 epochs of the default config                 train/summary.json
#   speedrun   time to 99% test digit and sum accuracy, 3      speedrun.json
#              seeds, of --preset $SPEEDRUN_PRESET
#   pytorch    epochs of --preset $WRITEUP_PRESET beside the   pytorch.json
#              write-up in PyTorch (only if torch imports)
# then prints one table (experiments/gpu_check.py; also summary.json). A failed or
# timed-out step is recorded (steps.jsonl, logs/STEP.log) and the next one runs; the exit
# status is 1 if any step failed.
#
# Installs nothing: it runs this checkout's code (PYTHONPATH), needing only jax, flax,
# optax, orbax-checkpoint and numpy (matplotlib for the training's report; torch for the
# comparison). Without tensorflow-datasets MNIST is read from the IDX files, without
# tensorboardX the training writes no TensorBoard logs; each says so in one line.
#
# Time: GPU_CHECK_BUDGET_S (default 450) bounds the whole; each step also has its own
# limit, cut to what is left of the budget. Estimates on one H100 (compiles take seconds
# per program): device 10 s, benchmark 90 s (about 15 programs, a full epoch per loop),
# train 80 s, speedrun 90 s (3 fresh processes), pytorch 60 s (torch on the CPU cores).
#
# With the device tool (the repository's working tree and up to 8 ignored paths, 64 MiB in
# all, are copied to the GPU machine), MNIST travels as the ignored folder data/mnist/:
#   mkdir -p data/mnist && cp /path/to/mnist/*-ubyte.gz data/mnist/
#   run(command="bash experiments/gpu_check.sh data/mnist $OUT/gpu", carry=["data/mnist"],
#       timeout_s=540)
#
# GPU_CHECK_TINY=1 makes every step tiny (tiny data, one epoch, small batches): the test
# runs it on CPU end to end (tests/experiments/test_gpu_check.py).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: bash experiments/gpu_check.sh MNIST_DIR OUT_DIR" >&2
    exit 2
fi
if [[ ! -d $1 ]]; then
    echo "error: MNIST folder $1 is not a folder: give the folder of the four MNIST IDX files" >&2
    exit 2
fi
MNIST_DIR=$(cd "$1" && pwd)
mkdir -p "$2/logs"
OUT=$(cd "$2" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# The benchmark and the speedrun start child processes on the same GPU while their parent
# holds it: JAX's default grab of 75% of GPU memory per process would starve them.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

BUDGET=${GPU_CHECK_BUDGET_S:-450}
RESERVE=15  # seconds kept for the summary
SPEEDRUN_PRESET=${SPEEDRUN_PRESET:-speedrun}
WRITEUP_PRESET=${WRITEUP_PRESET:-writeup}

if [[ ${GPU_CHECK_TINY:-0} == 1 ]]; then
    # The test suite's tiny model and batches (tests/helpers/__init__.py's TINY): the
    # compilation cache of a test session already holds most of these programs.
    SMALL=(--width 4 --batch-size 32 --eval-batch-size 64 --precise-bn 0)
    BENCH=(--batch-sizes 32 --repeats 2 --warmup-steps 1 --min-repeat-seconds 0.01
           --train-examples 256 --test-examples 64 --epoch-examples host=0,scan=64
           --matmul-size 128 "${SMALL[@]}")
    TRAIN=(--epochs 1 --no-report "${SMALL[@]}")
    SPEED=(--time-to-accuracy 0.01 --seeds 1 --epochs 1 "${SMALL[@]}")
    COMPARE=(--compare-epochs 1 "${SMALL[@]}")
else
    BENCH=(--batch-sizes 128,512,2048 --loops host,scan)
    TRAIN=(--epochs 10)
    SPEED=(--time-to-accuracy 0.99 --seeds 3)
    COMPARE=()
fi

: > "$OUT/steps.jsonl"

record() {  # NAME STATUS SECONDS EXIT_CODE NOTE
    printf '{"step": "%s", "status": "%s", "seconds": %s, "exit_code": %s, "note": "%s"}\n' \
        "$1" "$2" "$3" "$4" "$5" >> "$OUT/steps.jsonl"
    printf '%-10s %-8s %4ss  %s\n' "$1" "$2" "$3" "$5"
}

step() {  # NAME LIMIT_SECONDS COMMAND...: run it within its limit and what is left
    local name=$1 limit=$2 rc=0 status=ok
    shift 2
    local left=$((BUDGET - RESERVE - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        record "$name" skipped 0 null "the ${BUDGET} s budget is spent"
        return 0
    fi
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1 || rc=$?
    if ((rc == 124 || rc == 137)); then
        status=timeout
    elif ((rc != 0)); then
        status=failed
    fi
    record "$name" "$status" $((SECONDS - start)) "$rc" "limit ${limit} s; logs/$name.log"
}

echo "gpu_check: MNIST from $MNIST_DIR, results in $OUT, budget $BUDGET s"
step device 60 "$PYTHON" -m experiments.gpu_check device "$OUT/device.json"
step benchmark 150 "$PYTHON" -m mnist_plus.benchmark "${BENCH[@]}" --json "$OUT/benchmark.json"
step train 150 "$PYTHON" -m mnist_plus.train --workdir "$OUT/train" --fresh --no-progress \
    --mnist-dir "$MNIST_DIR" "${TRAIN[@]}"
step speedrun 150 "$PYTHON" -m mnist_plus.benchmark --preset "$SPEEDRUN_PRESET" "${SPEED[@]}" \
    --mnist-dir "$MNIST_DIR" --json "$OUT/speedrun.json"
if "$PYTHON" -c "import torch" > /dev/null 2>&1; then
    step pytorch 120 "$PYTHON" -m mnist_plus.benchmark --compare-pytorch \
        --preset "$WRITEUP_PRESET" "${COMPARE[@]}" --mnist-dir "$MNIST_DIR" \
        --json "$OUT/pytorch.json"
else
    record pytorch skipped 0 null "torch cannot be imported"
fi
"$PYTHON" -m experiments.gpu_check summary "$OUT"
