"""Every test-time augmentation kind scored on the finished runs of a sweep: the same
weights (each run's last.npz, or best.npz with --weights best) under each kind, so the
kinds compare without retraining.  One row per kind: mean +- std over the runs, the
mean of seeds 0-4, and each run's figure.

    fastlenet sweep --dataset mnist --seeds 10 --out sweeps/mnist
    python -m benchmarks.tta_table sweeps/mnist [--weights best] [--kinds none shifts shifts2]

The dataset, its folder and the preprocessing are each checkpoint's own (as
``fastlenet evaluate`` reads them); kinds that mirror are skipped for datasets whose
labels a mirror changes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


def run_dirs(sweep: Path):
    """The sweep's finished run directories, by seed (seed=S, or a grid's .../seed=S)."""
    found = [p.parent for p in sweep.rglob("metrics.json")]
    return sorted(found, key=lambda p: (str(p.parent), int(p.name.split("=")[-1]) if "=" in p.name else 0))


def score(run: Path, weights: str, kinds, test_sets: dict):
    """{kind: test accuracy in %} of one run's checkpoint; ``test_sets`` keeps each
    (dataset, folder)'s test set, loaded once for all the runs."""
    from fastlenet import checkpoint, data, tta
    from fastlenet.evaluate import model_labels, recorded_data
    model, ckpt = checkpoint.load_model(run / f"{weights}.npz")
    dataset, data_dir = recorded_data(ckpt.meta, None, None)
    if (dataset, data_dir) not in test_sets:
        test_sets[(dataset, data_dir)] = data.load(dataset, data_dir=data_dir, test_only=True)
    ds = test_sets[(dataset, data_dir)]
    y = model_labels(ds, list(ckpt.inference.class_names), dataset)
    x = data.prepare_inputs(ds.x_test, ckpt.inference, model.input_shape)
    return {k: 100 * tta.evaluate(model, x, y, k)[1] for k in kinds
            if not tta.uses_flips(k) or data.mirror_keeps_label(dataset)}


def main(argv=None) -> int:
    from fastlenet import tta
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="a fastlenet sweep --out folder")
    p.add_argument("--weights", choices=["last", "best"], default="last")
    p.add_argument("--kinds", nargs="+", choices=list(tta.KINDS), default=list(tta.KINDS))
    args = p.parse_args(argv)
    runs = run_dirs(args.sweep)
    if not runs:
        print(f"{args.sweep}: no finished runs (metrics.json) under it", file=sys.stderr)
        return 2
    table, test_sets = {}, {}
    for run in runs:
        for kind, acc in score(run, args.weights, args.kinds, test_sets).items():
            table.setdefault(kind, []).append(acc)
    print(f"{len(runs)} runs under {args.sweep}, {args.weights}.npz of each")
    print("| tta | views | mean +- std | first 5 | per run |")
    print("|---|---|---|---|---|")
    for kind, accs in table.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {kind} | {len(tta.views(kind))} | {statistics.fmean(accs):.2f}% +- {std:.2f} | "
              f"{statistics.fmean(accs[:5]):.2f}% | {', '.join(f'{a:.2f}' for a in accs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
