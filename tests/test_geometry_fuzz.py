"""A short run of the random-geometry campaign (tests/geometry_fuzz.py) in CI."""
import pytest

from fastlenet import kernels

import geometry_fuzz


@pytest.mark.skipif("cython" not in kernels.available(), reason="the Cython backend is not built")
def test_random_geometries_match_the_reference():
    assert geometry_fuzz.main(["--cases", "60", "--seed", "11"]) == 0
