"""fastlenet: a from-scratch CNN engine with compiled im2col kernels and a LeNet-5 trainer."""
__version__ = "0.1.0"
