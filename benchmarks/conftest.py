"""Benchmark set-up.  ``pytest --benchmark-only`` times every group; a plain
``pytest`` run (CI) runs each benchmark body once, untimed, as a smoke test."""
import pytest

from benchmarks import workloads


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not config.getoption("benchmark_only", False) and not config.getoption("benchmark_enable", False):
        config.option.benchmark_disable = True


@pytest.fixture(scope="session")
def torch_or_skip():
    return workloads.torch_or_skip()
