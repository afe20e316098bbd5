#!/usr/bin/env bash
# Build the Cython kernels with AddressSanitizer in a scratch copy of the project
# and drive every kernel path with random geometries (tests/geometry_fuzz.py) and
# the kernel test suite; workspaces are allocated at their exact sizes so that any
# overrun of a C micro-kernel is reported.
#     bash tests/asan.sh [cases-per-seed]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
cases="${1:-300}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/fastlenet" "$src/csrc" "$src/tests" "$src/setup.py" "$src/pyproject.toml" "$src/README.md" "$work/"
rm -f "$work"/fastlenet/kernels/*.so
cd "$work"
FASTLENET_SANITIZE=address python setup.py -q build_ext --inplace
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0
export FASTLENET_EXACT_WORKSPACES=1 PYTHONPATH="$work"
python - <<'PY'
import fastlenet.kernels._cy_conv as c, os, sys
assert c.__file__.startswith(os.getcwd()), c.__file__
print("AddressSanitizer build:", c.__file__)
PY
for seed in 0 1 2; do
    python tests/geometry_fuzz.py --cases "$cases" --seed "$seed"
done
python -m pytest -q -p no:cacheprovider tests/test_kernels_vs_reference.py tests/test_fused.py \
    tests/test_linear.py tests/test_workspace.py tests/test_plan.py tests/test_fast_norm.py tests/test_nonfinite.py \
    tests/test_pooled_dw.py -k "cython or numpy or shared or pooled"
