#!/usr/bin/env bash
# Build the Cython kernels with bounds and wraparound checking on, in a scratch
# copy of the project, and run the whole kernel test suite against that build.
#     bash tests/boundscheck.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/fastlenet" "$src/csrc" "$src/tests" "$src/setup.py" "$src/pyproject.toml" "$src/README.md" "$work/"
rm -f "$work"/fastlenet/kernels/*.so
cd "$work"
FASTLENET_BOUNDSCHECK=1 python setup.py -q build_ext --inplace
python - <<'PY'
import fastlenet.kernels._cy_conv as c, sys
print("bounds-checked build:", c.__file__)
PY
PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider tests/test_kernels_vs_reference.py \
    tests/test_kernel_errors.py tests/test_reference_kernels.py tests/test_fused.py -k "cython or numpy"
