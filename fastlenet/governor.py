"""The kernels' thread count, chosen while training when other programs want the cores.

Why.  Each kernel is a parallel region: its threads split the batch and meet at the
end.  On a quiet machine two threads nearly halve a step.  On a shared one the
scheduler pauses one of them now and then, and every region then waits for the
paused thread: the step runs at the pace of the starved thread, not at the share of
the CPUs the process gets.  How much that share is depends on how Linux groups the
competing work (``benchmarks/load.py``): beside two CPU-bound jobs from another
terminal (another *session*), the whole process gets 2/3 of a core whatever its
thread count, so one thread -- no waiting at all -- is fastest (2-core Intel Xeon,
2026-12-02: 2.3 s an epoch against 3.7 s with two); beside two jobs from the same
shell the cores are shared thread by thread, and two threads may still be faster.
Neither the grouping nor the other programs' behaviour can be read cheaply and
reliably, so the governor starts from the free CPUs and then *measures*.

How.  The trainer reports every step (images, seconds) and the governor reads how
many other tasks want a CPU (the running-task count of ``/proc/loadavg`` minus this
reader, one small file read per step).  While they and the full thread count fit in
the usable CPUs nothing changes: on a quiet machine that read is all it costs.  When
they have not fitted in 3 of 4 of the last :data:`WINDOW` steps, it drops to the CPUs left
free (at least one), then measures windows of at least :data:`WINDOW` steps and
:data:`WINDOW_SECONDS` seconds; now and then (every :data:`PROBE_EVERY` windows, twice
as long each time a try confirms the choice, up to :data:`PROBE_MAX`) it runs one
window at another count and keeps whichever gave more images per second.  Tries are
rare because a wrong count costs its whole window (up to 1.6x slower).  When a window
passes without contention it returns to the full count.

The kernels give the same bits at any thread count (``tests/test_governor.py``
trains with a changing count and compares with a fixed one), so the choice changes
only the speed.  ``fastlenet train --fixed-threads`` (or ``Trainer(governor=None)``)
turns it off.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, Optional

#: steps of contention before the count drops; also the fewest steps in a window
WINDOW = 8
#: the shortest measurement window (under load, the speed of windows of 0.1-0.2 s swings
#: by 2x with the scheduler's time slices)
WINDOW_SECONDS = 0.4
#: while contended, windows between two tries of another thread count: PROBE_EVERY at
#: first, doubled each time a try confirms the choice, up to PROBE_MAX
PROBE_EVERY = 8
PROBE_MAX = 64
#: contended: the other runnable tasks (mean per step) exceed the CPUs left free by the
#: full thread count by more than this
TAKEN = 0.5


def runnable_tasks() -> Optional[int]:
    """Tasks running or waiting for a CPU right now, machine-wide, this reader included
    (``/proc/loadavg``'s fourth field); None where the file does not exist."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


class ThreadGovernor:
    """Picks between 1 and ``threads`` threads for the kernels, window by window.

    ``set_threads(n)`` applies a count (default: every compiled backend's pool);
    ``cpus`` is the number of CPUs the process may use; ``runnable`` reads the
    machine's runnable-task count (injectable for tests).
    """

    def __init__(self, threads: int, cpus: int, set_threads: Optional[Callable[[int], None]] = None,
                 runnable: Callable[[], Optional[int]] = runnable_tasks) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if set_threads is None:
            from fastlenet import kernels
            set_threads = kernels.set_kernel_threads
        self.full, self.cpus = int(threads), max(1, int(cpus))
        self.current = self.full
        self._apply, self._runnable = set_threads, runnable
        self.contended = False                  # other tasks and our full count do not fit
        self.recent: Deque[int] = deque(maxlen=WINDOW)   # other runnable tasks, last steps
        self.rates: Dict[int, float] = {}       # images/s of the latest window at each count
        self.settled = self.full                # the count chosen while contended
        self.interval, self.since_probe = PROBE_EVERY, 0
        self.switches = 0                       # how many times the count changed
        self.steps_at: Dict[int, int] = {}      # training steps run at each count
        self._reset_window()

    def _reset_window(self) -> None:
        self.steps, self.images, self.seconds, self.others = 0, 0, 0.0, 0

    def _too_many(self, others: float) -> bool:
        return others > self.cpus - self.full + TAKEN

    def record(self, images: int, seconds: float) -> None:
        """One training step of ``images`` took ``seconds``; may change the thread count
        for the next step."""
        self.steps_at[self.current] = self.steps_at.get(self.current, 0) + 1
        if self.full == 1:
            return
        running = self._runnable()
        if running is None:                     # no /proc: nothing to go by
            return
        others = max(0, running - 1)
        self.recent.append(others)
        self.steps += 1
        self.images += images
        self.seconds += seconds
        self.others += others
        if not self.contended:
            # contended in at least 3 of 4 of the last WINDOW steps: not a blip
            if len(self.recent) == WINDOW and self._too_many(sorted(self.recent)[WINDOW // 4]):
                self._onset(sum(self.recent) / WINDOW)
            elif self.steps >= WINDOW:
                self._reset_window()
        elif self.steps >= WINDOW and self.seconds >= WINDOW_SECONDS:
            self._decide()

    def _onset(self, others: float) -> None:
        """Contention began: use the CPUs left free, at least one, and measure from here."""
        self.contended = True
        self.rates.clear()
        self.interval, self.since_probe = PROBE_EVERY, 0
        self.settled = max(1, min(self.full, int(round(self.cpus - others))))
        self._reset_window()
        self._set(self.settled)

    def _decide(self) -> None:
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        still = self._too_many(self.others / self.steps)
        self._reset_window()
        if not still:                           # the full count fits again: use it, forget the rest
            self.contended = False
            self.recent.clear()
            return self._set(self.full)
        self.rates.pop(self.current, None)      # re-inserted: the latest measured comes last
        self.rates[self.current] = rate
        if self.current != self.settled:        # a try just ended: keep the faster
            best = max(self.rates, key=self.rates.get)
            self.interval = min(2 * self.interval, PROBE_MAX) if best == self.settled else PROBE_EVERY
            self.settled = best
            return self._set(best)
        self.since_probe += 1
        if self.since_probe >= self.interval:
            self.since_probe = 0
            untried = [n for n in range(self.full, 0, -1) if n not in self.rates]
            # an untried count first (the full one before fewer), else the one measured longest ago
            self._set(untried[0] if untried else next(n for n in self.rates if n != self.current))

    def finish(self) -> None:
        """Training is over: the kernels get the full count back (evaluation, the next run)."""
        if self.current != self.full:
            self.current = self.full
            self._apply(self.full)
        self.contended = False
        self.recent.clear()

    def summary(self) -> str:
        """e.g. '2 threads throughout', or how the steps were shared between counts."""
        total = sum(self.steps_at.values())
        if self.switches == 0 or total == 0:
            return f"{self.full} thread{'s' if self.full != 1 else ''} throughout"
        parts = [f"{n} for {100 * k / total:.0f}%" for n, k in sorted(self.steps_at.items(), reverse=True)]
        return f"threads adapted to a busy machine: {', '.join(parts)} of the steps"

    @classmethod
    def for_training(cls, backend_name: str, threads: int, fixed: bool = False) -> Optional["ThreadGovernor"]:
        """The governor for training on ``backend_name`` with up to ``threads`` threads, or
        None: ``fixed``, one thread, or the numpy backend (its BLAS threads are not the
        kernels' pool)."""
        if fixed or threads <= 1 or backend_name == "numpy":
            return None
        from fastlenet import kernels
        return cls(threads, kernels.usable_cpus())

    def _set(self, n: int) -> None:
        if n != self.current:
            self.current = n
            self.switches += 1
            self._apply(n)
