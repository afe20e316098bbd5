"""fastlenet: a from-scratch CNN engine with compiled im2col kernels and a LeNet-5 trainer."""
from . import runtime as _runtime

__version__ = "0.1.0"

# the OpenMP workers' wait policy, before any kernel library loads libgomp (runtime.py)
_runtime.configure()
