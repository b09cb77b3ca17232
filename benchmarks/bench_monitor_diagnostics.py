"""Cost of the training monitor's optional diagnostics relative to the monitor's own time.

Loads a trained checkpoint (default: the demo's, ResNet-20 on cluttered digits), draws the
monitor's probe set (N = 500, k = 3, block taps) and times ``ModularityMonitor.measure`` — one
measurement, what the monitor does after each epoch — without diagnostics and with each
diagnostic alone and with the defaults, median of ``--repeats`` after one warm-up. Prints the
CPU model and thread count, each configuration's median seconds and its cost over the
monitor's own time (no diagnostics) in percent; also the time of each part inside the
diagnostics (``MonitorDiagnostics.seconds``: the shared k-NN pass and each diagnostic).

Usage::

    python benchmarks/bench_monitor_diagnostics.py --ckpt <run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.callbacks.monitor_diagnostics import DEFAULT_DIAGNOSTICS
from dnn_modularity.data import ClutteredDigitsDataModule
from dnn_modularity.models.classifier import load_classifier

CONFIGS = {
    "none (the monitor's own time)": [],
    "purity": ["purity"],
    "pairs": ["pairs"],
    "knn_acc": ["knn_acc"],
    "linear_probe": ["linear_probe"],
    f"default {list(DEFAULT_DIAGNOSTICS)}": list(DEFAULT_DIAGNOSTICS),
}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint of dnn_modularity.train")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    module = load_classifier(args.ckpt).eval()
    dm = ClutteredDigitsDataModule()
    dm.setup()
    print(f"CPU: {cpu_model()}, torch threads: {torch.get_num_threads()}, N={args.n}, k=3")
    base = None
    for label, names in CONFIGS.items():
        monitor = ModularityMonitor(n=args.n, k=3, diagnostics=names, figures=False)
        monitor.setup_probes(dm)
        monitor.measure(module)  # warm-up: plan, allocations
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            monitor.measure(module)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        base = median if base is None else base
        extra = 100 * (median - base) / base
        parts = ""
        if monitor._diag is not None:
            runs = args.repeats + 1
            parts = ", ".join(f"{k} {v / runs:.4f} s" for k, v in monitor._diag.seconds.items())
        print(f"{label:38s} {median:7.3f} s  {extra:+6.1f} %   per measurement: {parts}")


if __name__ == "__main__":
    main()
