"""What the modularity monitor adds to training: fit time with the monitor on vs off.

For each setting it trains with ``python -m dnn_modularity.train`` (a fresh process per run), the
monitor on and off in interleaved order (on, off, on, off, ...; ``--repeats`` of each), and
prints, side by side:

- the *measured* overhead: the median over the interleaved pairs (a run with and the run without
  the monitor next to it in time) of fit time on / fit time off − 1 (``fit_seconds`` of
  ``results.json``: the wall time of ``trainer.fit``), every run's time, the ratio of the medians,
  the same from the processes' CPU seconds (user + system: not inflated by CPU steal), and the
  spread of the runs without the monitor (max / min − 1: the noise floor of this machine);
- the monitor's *logged* overhead (``results.json`` → ``modularity_overhead.overhead``, the
  median over the "on" runs): its own wall time (probe drawing, measurements, records, logging,
  end figures) divided by the fit time without it, and where that time went.

Settings (``--settings``, comma-separated):

- ``demo``: the no-argument demo (ResNet-20 on ``data=cluttered_digits``, 15 epochs, the
  monitor at epochs 0, 3, ..., 15). ``--demo-epochs E`` shortens it to E epochs with the monitor
  every E/... epochs so that the measurements per epoch stay those of the demo (6 per 15 epochs:
  E = 5 measures at 0 and 5);
- ``fake``: CIFAR-10-size random images (``data=fake``: 32×32×3, 10 classes, 50,000 training and
  10,000 validation/test images, as CIFAR-10), ResNet-20, batch 256, probe N = 500, the monitor
  after every epoch (and at the initialisation); ``--fake-train-size`` images per epoch,
  ``--fake-epochs`` epochs (1 by default: the monitor's fixed costs, probe drawing and end
  figures, then weigh as in the shortest run).

Usage:
    python benchmarks/bench_monitor.py                       # both settings, 3 repeats
    python benchmarks/bench_monitor.py --keep                # ... and keep the run folders
    python benchmarks/bench_monitor.py --report DIR          # the report of kept run folders
    python benchmarks/bench_monitor.py --settings fake --repeats 5 --fake-train-size 10000
    python benchmarks/bench_monitor.py --warmup 1 --extra "trainer=gpu"   # on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = ("demo", "fake")
DEMO_EPOCHS, DEMO_EVERY = 15, 3  # the demo recipe (recipe/cluttered_digits.yaml)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="demo,fake", help=f"subset of {','.join(SETTINGS)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs with and without the monitor")
    parser.add_argument(
        "--demo-epochs",
        type=int,
        default=DEMO_EPOCHS,
        help="epochs of the demo runs (a divisor of 15 keeps its measurements per epoch)",
    )
    parser.add_argument("--fake-train-size", type=int, default=50000, help="images per epoch")
    parser.add_argument(
        "--fake-eval-size", type=int, default=10000, help="validation and test images"
    )
    parser.add_argument("--fake-epochs", type=int, default=1, help="epochs of the fake runs")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed runs (monitor on) before each setting's pairs: a fresh machine's one-time "
        "costs (matplotlib's font cache, CUDA kernel loading) then fall on none of the pairs",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--extra", default="", help="extra overrides for every run (space-sep.)")
    parser.add_argument(
        "--report", type=Path, default=None, help="only report the runs kept in this folder"
    )
    return parser


def setting_overrides(setting: str, args: argparse.Namespace) -> tuple[list[str], str]:
    """Hydra overrides of a setting and its description."""
    if setting == "demo":
        epochs = args.demo_epochs
        # measurements per epoch as in the demo: (15/3 + 1) per 15 epochs
        measured = max(2, round((DEMO_EPOCHS // DEMO_EVERY + 1) * epochs / DEMO_EPOCHS))
        every = max(1, epochs // max(1, measured - 1))
        overrides = [f"trainer.max_epochs={epochs}", f"callbacks.modularity.every_n_epochs={every}"]
        text = (
            f"demo: ResNet-20, data=cluttered_digits (2048 canvases/epoch, batch 128), {epochs} "
            f"epochs, monitor every {every} epochs (+ epoch 0), N = 500, k = 3, block taps"
        )
        return overrides, text
    size = args.fake_train_size
    overrides = [
        "data=fake",
        "model=resnet20",
        f"data.train_size={size}",
        f"data.val_size={args.fake_eval_size}",
        f"data.test_size={args.fake_eval_size}",
        f"trainer.max_epochs={args.fake_epochs}",
        "probe.n=500",
        "callbacks.modularity.every_n_epochs=1",
    ]
    text = (
        f"fake: ResNet-20, data=fake 32x32x3 ({size} training / {args.fake_eval_size} validation "
        "images per epoch, "
        f"batch 256), {args.fake_epochs} epochs, monitor every epoch (+ epoch 0), N = 500, k = 3, "
        "block taps"
    )
    return overrides, text


def _cpu_jiffies() -> tuple[int, int]:
    """(total, steal) jiffies of all CPUs from /proc/stat ((0, 0) where unavailable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields), fields[7] if len(fields) > 7 else 0


def run_train(overrides: list[str], run_dir: Path, monitor: bool) -> dict:
    cmd = [sys.executable, "-m", "dnn_modularity.train", *overrides]
    cmd += [f"run_dir={run_dir}", "test=false", "trainer.enable_progress_bar=false"]
    if not monitor:
        cmd.append("~callbacks.modularity")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("MPLBACKEND", "Agg")
    start, (total0, steal0) = time.perf_counter(), _cpu_jiffies()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - start
    total1, steal1 = _cpu_jiffies()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"training failed ({' '.join(cmd)}):\n" + "\n".join(tail))
    bench = {
        "process_seconds": wall,
        "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        # CPU time the hypervisor gave to other guests during the run: a cause of noise
        "steal": (steal1 - steal0) / max(1, total1 - total0),
    }
    (run_dir / "bench.json").write_text(json.dumps(bench))
    return {**json.loads((run_dir / "results.json").read_text()), **bench}


def load_runs(root: Path, setting: str, args: argparse.Namespace) -> dict | None:
    """The cell of ``setting`` from run folders kept by an earlier ``--keep`` run (or None)."""
    on, off = [], []
    for repeat in itertools.count():
        runs = [root / f"{setting}_{kind}_{repeat}" for kind in ("on", "off")]
        if not all((run / "results.json").exists() for run in runs):
            break
        for run, bucket in zip(runs, (on, off), strict=True):
            result = json.loads((run / "results.json").read_text())
            extra = run / "bench.json"
            bucket.append({**result, **(json.loads(extra.read_text()) if extra.exists() else {})})
    return {"text": setting_overrides(setting, args)[1], "on": on, "off": off} if on else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _gpu_model() -> str | None:
    """The first CUDA GPU's name and compute capability, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} (compute capability {major}.{minor})"


def measure(setting: str, args: argparse.Namespace, root: Path) -> dict:
    overrides, text = setting_overrides(setting, args)
    overrides += args.extra.split()
    if args.threads is not None:
        overrides.append(f"num_threads={args.threads}")
    print(f"\n## {text}", flush=True)
    for warmup in range(args.warmup):
        result = run_train(overrides, root / f"{setting}_warmup_{warmup}", True)
        fit = result["fit_seconds"]
        print(f"# warm-up run {warmup} (not counted): fit {fit:.2f} s", flush=True)
    on, off = [], []
    for repeat in range(args.repeats):
        for monitor in (True, False) if repeat % 2 == 0 else (False, True):
            run_dir = root / f"{setting}_{'on' if monitor else 'off'}_{repeat}"
            result = run_train(overrides, run_dir, monitor)
            (on if monitor else off).append(result)
            print(
                f"# run {repeat} monitor {'on ' if monitor else 'off'}: fit "
                f"{result['fit_seconds']:.2f} s (CPU steal {100 * result['steal']:.1f} %)",
                flush=True,
            )
    return {"text": text, "on": on, "off": off}


def report(setting: str, cell: dict) -> None:
    on_fit = [r["fit_seconds"] for r in cell["on"]]
    off_fit = [r["fit_seconds"] for r in cell["off"]]
    pairs = [a / b - 1 for a, b in zip(on_fit, off_fit, strict=True)]
    measured = statistics.median(pairs)
    logs = [r["modularity_overhead"] for r in cell["on"]]
    logged = statistics.median(log["overhead"] for log in logs)
    own = statistics.median(log.get("own_seconds", log.get("total_seconds", 0.0)) for log in logs)
    skip = ("own_seconds", "fit_seconds", "epoch_seconds", "total_seconds", "mean_seconds")
    keys = {key for log in logs for key in log}
    parts = sorted(key for key in keys if key.endswith("_seconds") and key not in skip)
    print(f"| {setting} | fit on (s) | fit off (s) | measured overhead | logged overhead |")
    print("|---|---|---|---:|---:|")
    print(
        f"| {setting} | {' / '.join(f'{t:.1f}' for t in on_fit)} (median "
        f"{statistics.median(on_fit):.1f}) | {' / '.join(f'{t:.1f}' for t in off_fit)} (median "
        f"{statistics.median(off_fit):.1f}) | {100 * measured:+.1f} % | {100 * logged:+.1f} % |"
    )
    medians = statistics.median(on_fit) / statistics.median(off_fit) - 1
    print(
        f"# difference measured − logged: {100 * (measured - logged):+.1f} points; overhead of "
        f"each interleaved pair: {', '.join(f'{100 * p:+.1f} %' for p in pairs)}; ratio of the "
        f"medians {100 * medians:+.1f} %; noise floor (runs without the monitor, max / min − 1) "
        f"{100 * (max(off_fit) / min(off_fit) - 1):.1f} %"
    )
    if all("cpu_seconds" in r for r in cell["on"] + cell["off"]):
        cpu_pairs = [
            a["cpu_seconds"] / b["cpu_seconds"] - 1
            for a, b in zip(cell["on"], cell["off"], strict=True)
        ]
        steal = [100 * r["steal"] for r in cell["on"] + cell["off"]]
        print(
            "# process CPU seconds (whole command), overhead of each pair: "
            f"{', '.join(f'{100 * p:+.1f} %' for p in cpu_pairs)} (median "
            f"{100 * statistics.median(cpu_pairs):+.1f} %); CPU steal {min(steal):.1f}–"
            f"{max(steal):.1f} %"
        )
    print(
        f"# monitor's own time (median of the 'on' runs): {own:.2f} s; by part: "
        + ", ".join(
            f"{key.removesuffix('_seconds')} "
            f"{statistics.median(log.get(key, 0.0) for log in logs):.2f}"
            for key in parts
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise SystemExit(f"unknown settings {bad}; valid: {', '.join(SETTINGS)}")
    print("# dnn-modularity monitor overhead benchmark")
    print(f"# date {time.strftime('%Y-%m-%d %H:%M:%S')}, python {platform.python_version()}")
    print(
        f"# CPU {cpu_model()} ({os.cpu_count()} cores), torch threads "
        f"{args.threads or 'default (all cores)'}; load average at start {os.getloadavg()[0]:.2f}"
    )
    gpu = _gpu_model()
    if gpu:
        print(f"# GPU {gpu}")
    if args.extra:
        print(f"# extra overrides for every run: {args.extra}")
    if args.report is not None:
        for setting in settings:
            cell = load_runs(args.report, setting, args)
            if cell is not None:
                print(f"\n# {cell['text']} (runs kept in {args.report})")
                report(setting, cell)
        return 0
    print(f"# {args.repeats} runs with and {args.repeats} without the monitor, interleaved")
    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        root = Path(tmp)
        cells = {setting: measure(setting, args, root) for setting in settings}
        for setting, cell in cells.items():
            print(f"\n# {cell['text']}")
            report(setting, cell)
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="bench_monitor_kept_"))
            os.rename(root, kept / "runs")
            print(f"# run folders kept in {kept / 'runs'}")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
