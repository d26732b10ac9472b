"""Choose the cpu scale's budget by measurement: clean- and noisy-label V-Net Dice per budget.

PINT's claim can only be judged where the clean-label V-Net is good and the noisy one
clearly worse (paper: 91.1 -> 82.6 Dice). This script trains the plain V-Net on the clean
and on the 50 %-noisy labels of the reproduction's synthetic data (the scale's dataset, its
noise recipe, seed 0) for each candidate budget and prints the table kept in
``docs/REGIME.md``: budget -> clean Dice, noisy Dice, gap -> minutes.

Usage (from the repository root; ~15 min on the 2-core development machine)::

    python scripts/regime_sweep.py --out results/regime_sweep
    python scripts/regime_sweep.py --budgets nf4_it450 nf8_it900 --seed 1
    python scripts/regime_sweep.py --budgets nf8_it600 --shape 100 70 44 --n-train 24 --n-test 12 \
        --out results/regime_la_sized      # LA-sized volumes: does the clean V-Net stay in regime?

Runs already finished in ``--out`` are reused.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyseg_noise.reproduce.common import ReproduceSettings, prepare_data, run_config, train_run
from pyseg_noise.reproduce.noisy_labels import structure_radius_range, write_noisy_labels
from pyseg_noise.reproduce.scales import SCALES

#: name -> (V-Net n_filters, iterations); crop, batch, data and lr are the cpu scale's, the lr step
#: keeps the paper's 2500/6000 proportion
BUDGETS = {
    "nf4_it450": (4, 450),
    "nf8_it600": (8, 600),
    "nf8_it900": (8, 900),
    "nf8_it1200": (8, 1200),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/regime_sweep")
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-rate", type=float, default=0.5)
    p.add_argument("--shape", type=int, nargs=3, default=None, help="synthetic volume size (default: the cpu scale's "
                   "64 48 48; LA's half-resolution volumes are about 100 70 44)")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training volumes (default: the scale's 16)")
    p.add_argument("--n-test", type=int, default=None, help="synthetic test volumes (default: the scale's 16)")
    args = p.parse_args(argv)
    out = Path(args.out)
    scale = SCALES["cpu"]
    settings = ReproduceSettings(out=str(out), scale="cpu", seed=args.seed, progress=False)
    shape = tuple(args.shape or scale.shape)
    data = prepare_data(settings, shape, args.n_train or scale.n_train, args.n_test or scale.n_test, out, print)
    radius = structure_radius_range(shape, data.foreground_fraction)
    label_dir = out / "labels" / f"noise{round(100 * args.noise_rate)}_seed{args.seed}"
    write_noisy_labels(data.root, label_dir, args.noise_rate, args.seed, radius_range=radius)
    rows = []
    for name in args.budgets:
        n_filters, iterations = BUDGETS[name]
        budget = scale.config_overrides()
        budget["iterations"] = iterations
        budget["model"] = {"n_filters": n_filters}
        budget["optim"] = {"lr": scale.lr, "lr_step": max(1, round(iterations * 2500 / 6000))}
        budget["checkpoint_every"] = max(1, iterations // 4)
        result = {}
        for labels, ldir in (("clean", None), ("noisy", label_dir)):
            cfg = run_config(settings, budget, "vnet", {}, args.seed, data.root, ldir)
            started = time.perf_counter()
            summary, seconds, reused = train_run(cfg, out / "runs" / name / labels, overwrite=False)
            result[labels] = (100 * summary["dice"], seconds or time.perf_counter() - started, reused)
            print(f"{name} {labels}: Dice {result[labels][0]:.2f} %"
                  + ("  [reused]" if reused else f"  [{seconds:.0f} s]"), flush=True)
        clean, noisy = result["clean"][0], result["noisy"][0]
        rows.append((name, n_filters, iterations, clean, noisy, clean - noisy,
                     sum(r[1] for r in result.values()) / 2 / 60, any(r[2] for r in result.values())))
    print()
    print(f"data: {data.description}; noise {100 * args.noise_rate:.0f}% of the training cases, radii "
          f"{radius[0]}-{radius[1]}; seed {args.seed}; crop {'x'.join(map(str, scale.crop_size))}, "
          f"batch {scale.batch_size}, SGD lr {scale.lr} /10 at 2500/6000 of the run")
    print("| budget | V-Net n_filters | iterations | clean Dice % | noisy Dice % | gap (points) | "
          "min per V-Net run | in regime (clean >= 85, gap >= 6) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, nf, it, clean, noisy, gap, minutes, reused in rows:
        regime = "yes" if clean >= 85 and gap >= 6 else "no"
        print(f"| {name} | {nf} | {it} | {clean:.2f} | {noisy:.2f} | {gap:.2f} | "
              f"{minutes:.1f}{' (reused)' if reused else ''} | {regime} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
