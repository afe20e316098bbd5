"""Soak: 30 epochs of LeNet-5 training in one process, resident memory sampled
after every epoch; fails if memory grows beyond noise after the first epoch.

    FASTLENET_DATA=../shared/datasets python tests/soak.py [--epochs 30] [--limit 20000]
"""
import argparse
import os
import sys

from fastlenet import data, models, optim
from fastlenet.trainer import Trainer


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    p.add_argument("--dataset", default="fashion-mnist")
    a = p.parse_args()
    ds = data.load(a.dataset)
    if a.limit:
        ds.x_train, ds.y_train = ds.x_train[:a.limit], ds.y_train[:a.limit]
    data.split_validation(ds, 0.05, seed=0)
    model = models.build("lenet5", seed=0)
    samples = []

    def log(line):
        if line.startswith("epoch"):
            samples.append(rss_mb())
            print(f"{line}  rss {samples[-1]:.1f} MB", flush=True)
    Trainer(model, ds, optim.Adam(model.params, lr=1e-3), epochs=a.epochs, batch_size=128, augment=True,
            log=log).run()
    after_first = samples[1:]
    growth = max(after_first) - samples[1]
    print(f"resident memory after epoch 1: {samples[0]:.1f} MB; epochs 2..{a.epochs}: "
          f"{min(after_first):.1f}..{max(after_first):.1f} MB (growth {growth:+.1f} MB)")
    return 0 if growth < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
