"""The thread governor (fastlenet.governor): what it does on a quiet machine, under
contention where fewer threads are faster and where they are not, when contention
ends -- and that a changing thread count trains the very same weights."""
import numpy as np
import pytest

from fastlenet import governor as gov
from fastlenet import kernels, models, optim
from fastlenet.trainer import Trainer, as_dataset


@pytest.fixture(autouse=True)
def step_windows(monkeypatch):
    """Windows of WINDOW steps whatever their duration (the fake steps are short)."""
    monkeypatch.setattr(gov, "WINDOW_SECONDS", 0.0)


class FakeMachine:
    """A machine where ``others`` other tasks run and a step at n threads takes
    ``step_seconds[n]``; records every thread count the governor applies."""

    def __init__(self, others, step_seconds):
        self.others, self.step_seconds, self.applied = others, step_seconds, []

    def runnable(self):
        return self.others + 1                       # the reader itself is running

    def governor(self, threads=2, cpus=2):
        return gov.ThreadGovernor(threads, cpus, set_threads=self.applied.append, runnable=self.runnable)

    def windows(self, g, n):
        for _ in range(n * gov.WINDOW):
            g.record(256, self.step_seconds[g.current])


def test_a_quiet_machine_keeps_every_thread_and_changes_nothing():
    m = FakeMachine(others=0, step_seconds={2: 0.01, 1: 0.005})
    g = m.governor()
    m.windows(g, 50)
    assert m.applied == [] and g.current == 2 and g.switches == 0
    assert g.summary() == "2 threads throughout"


def test_contended_and_one_thread_faster_settles_on_one():
    m = FakeMachine(others=2, step_seconds={2: 0.030, 1: 0.020})
    g = m.governor()
    m.windows(g, 1)            # WINDOW contended steps: down to the CPUs left free (at least 1)
    assert m.applied == [1] and g.current == 1 and g.settled == 1
    m.windows(g, gov.PROBE_EVERY - 1)
    assert g.current == 1
    m.windows(g, 1)            # after PROBE_EVERY windows, 2 is tried
    assert g.current == 2
    m.windows(g, 1)            # ... and found slower: the next try waits twice as long
    assert g.current == 1 and m.applied == [1, 2, 1] and g.interval == 2 * gov.PROBE_EVERY
    m.windows(g, 2 * gov.PROBE_EVERY - 1)
    assert g.current == 1
    m.windows(g, 1)
    assert g.current == 2
    assert "1 for" in g.summary() and "2 for" in g.summary()


def test_contended_but_two_threads_faster_goes_back_to_two():
    m = FakeMachine(others=2, step_seconds={2: 0.015, 1: 0.025})
    g = m.governor()
    m.windows(g, 1 + gov.PROBE_EVERY + 1)
    assert m.applied == [1, 2] and g.current == 2 and g.settled == 2 and g.interval == gov.PROBE_EVERY
    m.windows(g, gov.PROBE_EVERY - 1)
    assert g.current == 2                            # no try before the interval is over
    m.windows(g, 1)
    assert g.current == 1                            # then 1 again, measured longest ago


def test_a_short_blip_of_load_changes_nothing():
    m = FakeMachine(others=0, step_seconds={2: 0.01, 1: 0.02})
    g = m.governor()
    for k in range(20 * gov.WINDOW):
        m.others = 3 if k % (2 * gov.WINDOW) < gov.WINDOW // 2 else 0
        g.record(256, 0.01)
    assert m.applied == []


def test_the_count_drops_to_the_cpus_left_free():
    m = FakeMachine(others=2, step_seconds={4: 0.03, 3: 0.03, 2: 0.02, 1: 0.04})
    g = m.governor(threads=4, cpus=4)
    m.windows(g, 1)
    assert g.current == 2


def test_when_the_contention_ends_the_full_count_returns():
    m = FakeMachine(others=2, step_seconds={2: 0.030, 1: 0.020})
    g = m.governor()
    m.windows(g, 3)
    assert g.current == 1
    m.others = 0
    m.windows(g, 1)
    assert g.current == 2 and not g.contended


def test_free_cpus_beside_the_others_are_not_contention():
    m = FakeMachine(others=2, step_seconds={2: 0.030, 1: 0.020})
    g = m.governor(threads=2, cpus=4)                # 2 other tasks + 2 threads fit in 4 CPUs
    m.windows(g, 10)
    assert m.applied == []


def test_windows_last_long_enough_to_average_the_scheduler_out(monkeypatch):
    monkeypatch.setattr(gov, "WINDOW_SECONDS", 0.4)
    monkeypatch.setattr(gov, "PROBE_EVERY", 1)
    m = FakeMachine(others=2, step_seconds={2: 0.030, 1: 0.020})
    g = m.governor()
    m.windows(g, 1)
    assert g.current == 1
    for _ in range(19):                              # 19 steps of 20 ms: not yet a window
        g.record(256, 0.020)
    assert g.current == 1
    g.record(256, 0.020)                             # 0.4 s: the window ends, 2 is tried
    assert g.current == 2


def test_one_thread_or_no_proc_is_left_alone():
    m = FakeMachine(others=5, step_seconds={1: 0.01})
    g = m.governor(threads=1)
    m.windows(g, 5)
    assert m.applied == []
    g = gov.ThreadGovernor(2, 2, set_threads=m.applied.append, runnable=lambda: None)
    for _ in range(5 * gov.WINDOW):
        g.record(256, 0.01)
    assert m.applied == [] and g.current == 2


def test_runnable_tasks_reads_the_machine():
    n = gov.runnable_tasks()
    assert n is None or n >= 1


def _train(backend, governor, steps=6 * gov.WINDOW):
    rng = np.random.default_rng(0)
    x = rng.random((steps * 8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    ds = as_dataset(x, y, validation_data=(x[:16], y[:16]))
    model = models.build("lenet5", backend=backend, seed=0)
    Trainer(model, ds, optim.Adam(model.params, lr=1e-3, backend=backend), epochs=1, batch_size=8,
            governor=governor).run()
    return model.flat_params.copy()


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_a_changing_thread_count_trains_the_same_bits(backend):
    if backend not in kernels.available():
        pytest.skip(f"{backend} backend not available")
    kernels.set_num_threads(2)
    try:
        fixed = _train(backend, None)
        flips = {"n": 0}

        def runnable():                              # contended in every other pair of windows
            flips["n"] += 1
            return 3 if (flips["n"] // (2 * gov.WINDOW)) % 2 == 0 else 1
        g = gov.ThreadGovernor(2, 2, runnable=runnable)
        governed = _train(backend, g)
        assert g.switches >= 2 and set(g.steps_at) == {1, 2}
        np.testing.assert_array_equal(governed, fixed)
    finally:
        kernels.set_num_threads(kernels.default_threads())


def test_train_governs_unless_told_not_to():
    from fastlenet import resume
    from fastlenet.train import make_governor
    s = {"threads": 2, "backend": "cython", "fixed_threads": False}
    assert isinstance(make_governor(s), gov.ThreadGovernor)
    assert make_governor({**s, "fixed_threads": True}) is None
    assert make_governor({**s, "threads": 1}) is None
    assert make_governor({**s, "backend": "numpy"}) is None      # its BLAS threads are not the pool
    resume.check_flags({"resume": "RUN", "fixed_threads": True})   # may accompany --resume


def test_fit_governs_a_compiled_backend_unless_told_not_to():
    from fastlenet.trainer import _governor
    assert _governor(models.build("lenet5", backend="numpy")) is None
    if "cython" in kernels.available() and kernels.default_threads() > 1:
        kernels.set_num_threads(2)
        assert isinstance(_governor(models.build("lenet5", backend="cython")), gov.ThreadGovernor)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    from fastlenet.trainer import fit
    assert len(fit(models.build("lenet5", backend="numpy"), x, y, epochs=1, adapt_threads=False)) == 1


def test_the_full_count_is_restored_when_training_ends():
    m = FakeMachine(others=2, step_seconds={2: 0.030, 1: 0.020})
    g = m.governor()
    m.windows(g, 2)
    assert g.current == 1
    g.finish()
    assert g.current == 2 and m.applied[-1] == 2
    switches = g.switches
    g.finish()                                       # nothing more to restore
    assert m.applied[-1] == 2 and g.switches == switches
