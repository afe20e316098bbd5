"""Kill a real training process at random moments and resume it.

    python tests/kill_resume_campaign.py --trials 5

For each of SIGINT, SIGTERM and SIGKILL, ``--trials`` runs are started on a
small synthetic IDX dataset, killed after a random delay, then resumed with
``--resume`` until they complete.  Every resumed run's final parameters are
compared with an uninterrupted run's (exact equality: shuffling and
augmentation derive from (seed, epoch, batch), so even a SIGKILL, which
restarts from the last epoch's checkpoint, replays the same batches).
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_synthetic_idx  # noqa: E402

from fastlenet import checkpoint  # noqa: E402


def cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fastlenet.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), **kw)


def params(run_dir):
    return checkpoint.read(run_dir / "last.npz").params


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rnd = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = write_synthetic_idx(tmp / "data", n_train=4000, n_test=200)
        base = ["--dataset", "idx", "--data-dir", str(data_dir), "--epochs", "4", "--batch-size", "16",
                "--val-split", "0.1", "--augment", "--no-plots", "--quiet", "--threads", "2",
                "--backend", "numpy"]        # the slowest backend: kills land mid-epoch, not at start-up
        t0 = time.perf_counter()
        ref = cli(base + ["--out", str(tmp / "ref")])
        assert ref.wait() == 0, ref.stderr.read()
        duration = time.perf_counter() - t0
        want = params(tmp / "ref")
        print(f"uninterrupted run: {duration:.1f} s")
        results = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for trial in range(a.trials):
                run_dir = tmp / f"{sig.name}-{trial}"
                proc = cli(base + ["--out", str(run_dir)])
                delay = rnd.uniform(0.3, 0.9) * duration
                time.sleep(delay)
                proc.send_signal(sig)
                code = proc.wait()
                killed_code = code
                had_checkpoint = (run_dir / "last.npz").exists()
                resumes = 0
                while code != 0 and resumes < 5:
                    if not (run_dir / "last.npz").exists():       # killed before the first checkpoint
                        proc = cli(base + ["--out", str(run_dir)])
                    else:
                        proc = cli(["--resume", str(run_dir)])
                    code = proc.wait()
                    resumes += 1
                got = params(run_dir)
                same = all(np.array_equal(got[k], want[k]) for k in want)
                results.append((sig.name, same))
                where = "after a checkpoint" if had_checkpoint else "before the first checkpoint"
                print(f"{sig.name:<8} trial {trial + 1}: killed after {delay:4.1f} s ({where}), exit code {killed_code}, "
                      f"{resumes} resume(s), final parameters {'identical' if same else 'DIFFERENT'}")
        for name in ("SIGINT", "SIGTERM", "SIGKILL"):
            n = sum(1 for s, _ in results if s == name)
            ok = sum(1 for s, same in results if s == name and same)
            print(f"{name}: {ok}/{n} trials matched the uninterrupted run")
        return 0 if all(same for _, same in results) else 1


if __name__ == "__main__":
    sys.exit(main())
