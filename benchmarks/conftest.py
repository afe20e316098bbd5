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


def pytest_collection_modifyitems(config, items):
    """With --benchmark-only, the test suite's other tests are deselected (one 'deselected'
    count), not listed one 'Skipping non-benchmark' line each."""
    if not config.getoption("benchmark_only", False):
        return
    keep = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """GFLOP/s of every benchmark that declares its work (workloads.record), from its median."""
    session = getattr(config, "_benchmarksession", None)
    rows = []
    for bench in getattr(session, "benchmarks", None) or []:
        gflop = (getattr(bench, "extra_info", None) or {}).get("gflop")
        median = getattr(getattr(bench, "stats", None), "median", None)
        if gflop and median:
            rows.append((bench.group or "", bench.name, gflop / median))
    if not rows:
        return
    terminalreporter.write_sep("-", "GFLOP/s (from each median)")
    for group, name, gflops in sorted(rows):
        terminalreporter.write_line(f"{gflops:9.1f}  {name}  [{group}]")
