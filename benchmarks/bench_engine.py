"""Benchmark of the graph engine against paper 1's official algorithm and a bare matmul.

For synthetic class-structured features (N samples, D dims, 10 classes) it measures, each in a
fresh subprocess so that peak memory is the method's own:

- ``ours``: :func:`dnn_modularity.graph.knn_modularity` (k = 3, cosine);
- ``official``: paper 1's official algorithm re-implemented faithfully here — numpy float32
  normalisation and dense N×N similarity, diagonal set to 0, ``heapq.nlargest`` per row into a
  dense float64 adjacency, (A + Aᵀ)/2, ``networkx.from_numpy_array`` and
  ``networkx.community.modularity``;
- ``matmul``: one bare N×D @ D×N float32 ``torch.mm`` on the same device and threads.

Peak memory is the peak resident set size above the process's size after building the features
(``/proc/self/clear_refs`` resets the peak), or ``torch.cuda.max_memory_allocated`` on CUDA. The
official algorithm above ``--skip-official-above`` multiply-adds (N²·D) is not run; its time is
then *estimated* as N² × (CPU ns per pair beyond the matmul, measured in this run's official runs,
else 287 ns) plus the bare matmul's CPU time, and marked "estimated". Times are wall-clock seconds
with the process's CPU seconds in brackets (on a shared machine the CPU time is the steadier one).

Usage:
    python benchmarks/bench_engine.py --threads 1
    python benchmarks/bench_engine.py --sizes 500x512,2000x512 --threads 1
    python benchmarks/bench_engine.py --big --threads 1     # N = 50,000, D = 2048, ours only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SIZES = [(n, d) for n in (500, 2000, 10000) for d in (512, 8192, 65536)]
NUM_CLASSES = 10
K = 3
NS_PER_PAIR_FALLBACK = 287.0  # ENGINE-NOTES: the official heapq loop per (row, column) pair


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        n, d = item.lower().split("x")
        sizes.append((int(n), int(d)))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=DEFAULT_SIZES,
        help="comma-separated NxD list (default: N in 500,2000,10000 × D in 512,8192,65536)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--skip-official-above",
        type=float,
        default=2e12,
        help="do not run the official algorithm above this many multiply-adds N²·D; estimate it",
    )
    parser.add_argument(
        "--big", action="store_true", help="only the N = 50,000, D = 2048 memory run (ours)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="free text printed in the header")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "N", "D"), help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- worker side


def _set_thread_env(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_features(n: int, d: int, seed: int):
    """Class-structured features: class mean × 0.3 + unit noise (float32), labels (n,)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=gen)]
    means = torch.randn(NUM_CLASSES, d, generator=gen)
    feats = torch.randn(n, d, generator=gen)
    feats.add_(means[labels], alpha=0.3)
    return feats, labels


def official_knn_modularity(features, labels, k: int) -> float:
    """Paper 1's official algorithm, step by step (numpy + heapq + networkx)."""
    import heapq

    import networkx as nx
    import numpy as np

    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    sim = x @ x.T
    n = sim.shape[0]
    np.fill_diagonal(sim, 0)
    adj = np.zeros((n, n))
    for i in range(n):
        row = sim[i]
        idx = heapq.nlargest(k, range(n), row.take)
        adj[i, idx] = row[idx]
    adj = (adj + adj.T) / 2
    graph = nx.from_numpy_array(adj)
    labels = np.asarray(labels)
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return float(nx.community.modularity(graph, communities))


def run_worker(impl: str, n: int, d: int, threads: int, device: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from dnn_modularity.graph import knn_modularity

    feats, labels = make_features(n, d, seed)
    if impl == "official":
        feats_np, labels_np = feats.numpy(), labels.numpy()
        del feats
    elif device != "cpu":
        feats, labels = feats.to(device), labels.to(device)
        torch.cuda.synchronize()
    # warm the libraries up on a tiny problem (thread pools, MKL/oneDNN kernels, CUDA context)
    tiny, tiny_labels = make_features(64, 64, seed + 1)
    if impl == "official":
        official_knn_modularity(tiny.numpy(), tiny_labels.numpy(), K)
    else:
        knn_modularity(tiny.to(device), tiny_labels.to(device), k=K)
        _ = tiny.to(device) @ tiny.to(device).T
    cuda = device != "cpu"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    peak_reset = _reset_peak_rss()
    base_rss = _rss_kib("VmRSS")
    value = None
    repeats = 1 if impl == "official" or n * n * d > 2e11 else 3
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        if impl == "ours":
            value = knn_modularity(feats, labels, k=K)
        elif impl == "official":
            value = official_knn_modularity(feats_np, labels_np, K)
        elif impl == "matmul":
            out = feats @ feats.T
            if cuda:
                torch.cuda.synchronize()
            del out
        else:
            raise ValueError(f"unknown impl {impl!r}; valid: ours, official, matmul")
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak_mib = (_rss_kib("VmHWM") - base_rss) / 1024 if peak_reset else float("nan")
    return {
        "impl": impl,
        "n": n,
        "d": d,
        "time": best,
        "cpu": best_cpu,
        "value": value,
        "peak_mib": peak_mib,
    }


# --------------------------------------------------------------------------- driver side


def spawn(impl: str, n: int, d: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, str(n), str(d)]
    cmd += ["--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"impl": impl, "n": n, "d": d, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def header(args: argparse.Namespace) -> list[str]:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        "# dnn-modularity engine benchmark",
        f"# date {time.strftime('%Y-%m-%d %H:%M:%S')}, torch {torch.__version__}, "
        f"python {platform.python_version()}",
        f"# device {args.device}, threads {args.threads}, CPU {cpu} ({os.cpu_count()} cores), "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"# features: N samples × D dims, {NUM_CLASSES} classes, mean·0.3 + N(0, 1); k = {K}, "
        "cosine",
    ]
    if args.note:
        lines.append(f"# note: {args.note}")
    return lines


def fmt_time(t: float) -> str:
    return f"{t:.3f}" if t < 100 else f"{t:.1f}"


def _pair(wall: float, cpu: float) -> str:
    return f"{fmt_time(wall)} ({fmt_time(cpu)})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _set_thread_env(args.threads)
    if args.worker:
        impl, n, d = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(run_worker(impl, n, d, args.threads, args.device, args.seed)))
        return 0
    for line in header(args):
        print(line, flush=True)
    if args.big:
        ours = spawn("ours", 50_000, 2048, args)
        official_gib = (20 * 50_000**2 + 4 * 50_000 * 2048) / 2**30
        print("| N | D | knn_modularity (s) | Q | peak memory (MiB) |")
        print("|---:|---:|---:|---:|---:|")
        if "error" in ours:
            print(f"| 50000 | 2048 | failed: {ours['error']} | | |")
            return 1
        print(
            f"| 50000 | 2048 | {_pair(ours['time'], ours['cpu'])} | {ours['value']:.6f} | "
            f"{ours['peak_mib']:.0f} |"
        )
        print(f"# the official algorithm would need ~{official_gib:.0f} GiB for its dense arrays")
        return 0

    rows = []
    ns_per_pair: list[float] = []  # official CPU time beyond the matmul, per (row, column) pair
    for n, d in args.sizes:
        ours = spawn("ours", n, d, args)
        matmul = spawn("matmul", n, d, args)
        run_official = n * n * d <= args.skip_official_above
        official = spawn("official", n, d, args) if run_official else None
        if official is not None and "error" not in official and "error" not in matmul:
            ns_per_pair.append(max(0.0, official["cpu"] - matmul["cpu"]) / (n * n) * 1e9)
        rows.append((n, d, ours, official, matmul))
        print(f"# done N={n} D={d}", flush=True)
    per_pair = sum(ns_per_pair) / len(ns_per_pair) if ns_per_pair else NS_PER_PAIR_FALLBACK

    print("# times: wall seconds (CPU seconds of the process); ratios: wall (CPU)")
    print(
        "| N | D | knn_modularity (s) | official (s) | Q ours | Q official | abs dQ | "
        "bare matmul (s) | official / ours | ours / matmul | peak MiB ours | peak MiB official |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, d, ours, official, matmul in rows:
        if "error" in ours or "error" in matmul or (official and "error" in official):
            errors = [r.get("error") for r in (ours, official, matmul) if r and "error" in r]
            print(f"| {n} | {d} | failed: {errors} |")
            continue
        if official is not None:
            off_wall, off_cpu, est = official["time"], official["cpu"], ""
            q_off = f"{official['value']:.9f}"
            dq = f"{abs(ours['value'] - official['value']):.1e}"
            mem_off = f"{official['peak_mib']:.0f}"
        else:
            off_cpu = n * n * per_pair * 1e-9 + matmul["cpu"]
            off_wall, est = off_cpu, " estimated"
            q_off, dq, mem_off = "not run", "-", "not run"
        print(
            f"| {n} | {d} | {_pair(ours['time'], ours['cpu'])} | "
            f"{_pair(off_wall, off_cpu)}{est} | {ours['value']:.9f} | {q_off} | {dq} | "
            f"{_pair(matmul['time'], matmul['cpu'])} | "
            f"{off_wall / ours['time']:.1f} ({off_cpu / ours['cpu']:.1f}){est} | "
            f"{ours['time'] / matmul['time']:.2f} ({ours['cpu'] / matmul['cpu']:.2f}) | "
            f"{ours['peak_mib']:.0f} | {mem_off} |"
        )
    source = f"from {len(ns_per_pair)} runs" if ns_per_pair else "fallback from ENGINE-NOTES"
    print(
        f"# official CPU ns per (row, column) pair beyond its matmul: {per_pair:.0f} ({source}); "
        "estimated official time = N² × that + the bare matmul's CPU time"
    )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
