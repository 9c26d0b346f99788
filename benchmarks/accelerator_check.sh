#!/usr/bin/env bash
# What to run on a machine with a GPU, in one call.
#
#     OUT=<folder> bash benchmarks/accelerator_check.sh [tests] [bench] [race] [scaling]
#
# (all four when none is named)
#   tests    the tests that check numbers against torch's golden trajectories and the
#            layouts (TEST_FILES; TEST_FILES=tests for the whole default suite, which no
#            GPU run has done yet), with jax on the GPU and torch hidden, as a new user has
#            it;
#   bench    step_bench.py with torch's rows on CUDA beside jax on the GPU;
#   race     step_race.py: gradxform's Adam against optax's, alternating;
#   scaling  leaves_scaling.py at 1000 leaves (fresh processes).
#
# It uses the machine's own python3, jax (with its CUDA plugin), optax and torch, and
# installs nothing: the repository is put on PYTHONPATH. Each part has its own time
# limit (seconds: TESTS_S, BENCH_S, RACE_S, SCALING_S); logs and tables go to $OUT, and
# a summary to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/accelerator_check}"
mkdir -p "$out"
parts="${*:-tests bench race scaling}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/benchmarks:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    python3 -c "import sys, jax, optax, torch; print('python', sys.version.split()[0], '| jax', jax.__version__,
jax.devices(), '| optax', optax.__version__, '| torch', torch.__version__, 'cuda:', torch.cuda.is_available())"
    echo "cores: $(nproc)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

if [[ " $parts " == *" tests "* ]]; then
    hidden="$(mktemp -d)"  # a torch package that cannot be imported: the suite runs as without torch
    mkdir -p "$hidden/torch"
    echo 'raise ImportError("torch is hidden by benchmarks/accelerator_check.sh")' > "$hidden/torch/__init__.py"
    files="${TEST_FILES:-tests/test_parity_golden.py tests/test_schedules_golden.py tests/test_layout.py
        tests/test_donation.py tests/test_numerics.py}"
    # shellcheck disable=SC2086  # one word per file
    PYTHONPATH="$hidden:$PYTHONPATH" timeout "${TESTS_S:-300}" python3 -m pytest -n "$(nproc)" -q --no-header \
        -rf $files > "$out/tests.txt" 2>&1
    echo "tests: exit $?"; grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.txt" | tail -n 30
fi
if [[ " $parts " == *" bench "* ]]; then
    timeout "${BENCH_S:-150}" python3 benchmarks/step_bench.py --torch-device cuda --skip-compile --repeats 30 \
        > "$out/step_bench.md" 2>&1
    echo "step_bench: exit $?"; grep -E "^\| (small|large) \| Adam \|" "$out/step_bench.md"
fi
if [[ " $parts " == *" race "* ]]; then
    timeout "${RACE_S:-90}" python3 benchmarks/step_race.py --trees 200x100,1000x16 --steps 200 > "$out/race.md" 2>&1
    echo "step_race: exit $?"; cat "$out/race.md"
fi
if [[ " $parts " == *" scaling "* ]]; then
    timeout "${SCALING_S:-120}" python3 benchmarks/leaves_scaling.py --leaves 1000 --contenders gradxform,optax \
        --repeats 20 --timeout 100 > "$out/scaling.md" 2>&1
    echo "leaves_scaling: exit $?"; cat "$out/scaling.md"
fi
