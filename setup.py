"""Build the Cython (AOT) kernel backend from csrc/.

Everything else lives in pyproject.toml.  Environment switches:

* ``FASTLENET_PORTABLE=1`` -- do not pass ``-march=native`` (for wheels that
  must run on other CPUs).
* ``FASTLENET_BOUNDSCHECK=1`` -- compile with Cython bounds and wraparound
  checking on (used by the robustness suite; slower).
* ``FASTLENET_SANITIZE=address`` -- compile and link with AddressSanitizer, for
  the C micro-kernels that bounds checking cannot see (``tests/asan.sh``).
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

BOUNDSCHECK = os.environ.get("FASTLENET_BOUNDSCHECK") == "1"

# One place for every Cython directive.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": BOUNDSCHECK,
    "wraparound": BOUNDSCHECK,
    "cdivision": True,
    "initializedcheck": BOUNDSCHECK,
    "nonecheck": False,
}

if sys.platform == "win32":
    COMPILE_ARGS, LINK_ARGS = ["/O2", "/openmp"], []
else:
    # -fassociative-math & co. let GCC vectorise float reductions; NaN/Inf
    # handling (-ffinite-math-only) is deliberately left on.
    COMPILE_ARGS = [
        "-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
        "-fassociative-math", "-fno-signed-zeros",
        "-Wno-psabi",    # the f64 vectors (FL_LB doubles) are wider than AVX2's registers: a note, not a bug
    ]
    if os.environ.get("FASTLENET_PORTABLE") != "1":
        COMPILE_ARGS.append("-march=native")
    LINK_ARGS = ["-fopenmp"]
    if os.environ.get("FASTLENET_SANITIZE"):
        sanitize = [f"-fsanitize={os.environ['FASTLENET_SANITIZE']}", "-fno-omit-frame-pointer", "-g"]
        COMPILE_ARGS += sanitize
        LINK_ARGS += sanitize


def extension(name, source):
    return Extension(
        name,
        [source],
        include_dirs=[np.get_include(), "csrc"],
        depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*.pxd")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    )


setup(
    ext_modules=cythonize(
        [
            extension("fastlenet.kernels._cy_conv", "csrc/conv.pyx"),
            extension("fastlenet.kernels._cy_pool", "csrc/pool.pyx"),
            extension("fastlenet.kernels._cy_norm", "csrc/norm.pyx"),
            extension("fastlenet.kernels._cy_linear", "csrc/linear.pyx"),
            extension("fastlenet.kernels._cy_optim", "csrc/optim.pyx"),
            extension("fastlenet.kernels._cy_loss", "csrc/loss.pyx"),
            extension("fastlenet.kernels._cy_probe", "csrc/probe.pyx"),
        ],
        compiler_directives=DIRECTIVES,
        include_path=["csrc"],
    ),
)
