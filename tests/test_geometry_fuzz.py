"""A short run of the random-geometry campaign (tests/geometry_fuzz.py) in CI."""
import pytest

from fastlenet import kernels

import geometry_fuzz


@pytest.mark.parametrize("name, cases", [("cython", 60), ("numba", 25)])
def test_random_geometries_match_the_reference(name, cases):
    if name not in kernels.available():
        pytest.skip(f"the {name} backend is not available")
    assert geometry_fuzz.main(["--cases", str(cases), "--seed", "11", "--backend", name]) == 0
