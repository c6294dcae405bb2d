#!/usr/bin/env bash
# The GPU check, one call on a machine with an accelerator (no network; the wheels it lacks carried in
# .whl/ by scripts/device_wheels.sh). In under 8 minutes it prints the device; runs scripts/benchmark.py at
# 10 x 100 and at widths 512 and 1024 (engine against the naive loop and against the measured matmul peak);
# times the default grid and the 100-cell grid (whole command, and --floor: the compute alone); runs the
# fast test suite with JAX_PLATFORMS=cuda; and writes each step's output and time to $OUT/device_check.md.
# The steps' limits add up to 460 s.
#
#   bash scripts/device_check.sh             # on the device machine, from the repository root
#   bash scripts/device_check.sh --dry-run   # anywhere: install the wheels, check the imports, print the steps
#
# PYTHON names the interpreter (default python3: the machine's own, which holds jax with CUDA).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
[[ "${1:-}" == "--dry-run" ]] && dry=1
out=${OUT:-/tmp/gradstudy-device-check}
mkdir -p "$out"
summary=$out/device_check.md
site=$(mktemp -d /tmp/gradstudy-site.XXXXXX)
python=${PYTHON:-python3}
platform=${JAX_PLATFORMS:-cuda}
(( dry )) && platform=cpu

{ echo "# gradstudy device check"; echo; echo "$(date -u +%Y-%m-%dT%H:%MZ), git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; } > "$summary"

# one step: a heading, the command's last lines and its exit status and time, inside a time limit
step() {
  local name=$1 limit=$2
  shift 2
  { echo; echo "## $name"; echo; echo '```'; } >> "$summary"
  if (( dry )); then
    echo "(dry run, limit ${limit} s) $*" | tee -a "$summary"
  else
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/step.log" 2>&1
    local rc=$?
    tail -n 30 "$out/step.log" | tee -a "$summary"
    echo "exit $rc, $((SECONDS - start)) s (limit $limit s)" | tee -a "$summary"
  fi
  echo '```' >> "$summary"
}

if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no wheels in .whl/: run scripts/device_wheels.sh here first and carry .whl" | tee -a "$summary"
  exit 2
fi
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 2
export PYTHONPATH=$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export JAX_PLATFORMS=$platform PYTHONUNBUFFERED=1
"$python" -c "import hydra, omegaconf, mlxtend, mnist1d, gradstudy; print('imports ok:', hydra.__version__, omegaconf.__version__)" \
  | tee -a "$summary" || exit 2

grid100=(init=xavier,he,lecun,orthogonal act=relu,tanh,elu,selu,leaky_relu optim.lr=0.003,0.01,0.03,0.1,0.3)
step "device" 30 "$python" -c "import jax; print(jax.__version__, jax.devices()); print(jax.devices()[0].device_kind)"
step "benchmark 10 x 100, 10 seeds" 60 "$python" scripts/benchmark.py --reps 2
step "benchmark 10 x 512, 5 seeds, 100 steps" 40 "$python" scripts/benchmark.py --width 512 --seeds 5 --steps 100 --reps 1
step "benchmark 10 x 1024, 5 seeds, 100 steps" 40 "$python" scripts/benchmark.py --width 1024 --seeds 5 --steps 100 --reps 1
step "default grid, whole command (2 warm runs)" 50 "$python" scripts/time_grid.py --runs 2
step "default grid, compute alone" 30 "$python" scripts/time_grid.py --floor --runs 1
step "100-cell grid, whole command (1 cold run)" 70 "$python" scripts/time_grid.py --runs 1 --cold "${grid100[@]}"
# the fast suite in 8 processes (pytest-xdist is on that machine), each taking GPU memory as it needs it
export XLA_PYTHON_CLIENT_PREALLOCATE=false
step "fast test suite on the accelerator" 140 "$python" -m pytest -q -n 8 -m "not slow" -p no:cacheprovider
echo "summary: $summary"
