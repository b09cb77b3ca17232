"""Benchmark of the graph engine against its peers, matmul bounds and paper 1's official algorithm.

For synthetic class-structured features (N samples, D dims, 10 classes; k = 3, cosine) it times,
each in a fresh subprocess (so that peak memory is the method's own): one cold run (its peak
memory; its time for cells above ``--once-above``), then the median of at least ``--repeats``
warm runs (more for cheap cells, until ``--min-seconds``); small cells run ``--rounds``
interleaved rounds of all methods (a shared VM's speed drifts) and pool the warm times:

- ``ours``: :func:`dnn_modularity.graph.knn_modularity` as shipped (kernel ``auto``: the bf16
  screen only where the micro-benchmark finds it fast; on GPUs the fp16 screen by capability and
  call size), with the path it chose and what its one-time decision cost;
- ``fp32`` / ``bf16`` / ``fp16``: the same with the kernel forced to ``float32`` / ``bfloat16`` /
  ``float16`` (fp16 is a candidate on CUDA only: not in the default list);
- ``faiss``: faiss-cpu ``IndexFlatIP`` exact k-NN (k + 1, self dropped) + (A + Aᵀ)/2 + igraph
  modularity (``pip install -e .[bench]``; skipped when faiss is not installed);
- ``sklearn``: scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")`` + networkx;
- ``numpy``: numpy's ``x @ x.T`` (OpenBLAS/MKL run it as a triangle-only syrk) — a bound;
- ``torch``: one full N×D @ D×N float32 ``torch.mm`` — a bound;
- ``official``: paper 1's official algorithm re-implemented faithfully here (numpy float32
  normalisation and dense N×N similarity, diagonal 0, ``heapq.nlargest`` per row into a dense
  float64 adjacency, (A + Aᵀ)/2, networkx). Above ``--skip-official-above`` multiply-adds (N²·D)
  it is not run and its time is *estimated* as N² × (its CPU ns per pair beyond the matmul,
  measured in this run, else 287 ns) plus the bare torch matmul's time, marked "estimated".

Every peer's Q is compared with ours, and its edge set with ours (the same pairs, or how many
differ). Peers and bounds above ``--skip-peers-above`` multiply-adds are not run. Peak memory is
the peak resident set size above the process's size after building the features
(``/proc/self/clear_refs`` resets the peak), or ``torch.cuda.max_memory_allocated`` on CUDA.

``--bf16-slowdown F`` multiplies the bf16 timings that ``ours`` measures by F: it simulates, on a
CPU with fast bf16 units, a CPU where bf16 matmuls are F times slower (as on AVX2 x86 without
them), to show the choice and its cost there.

Usage:
    python benchmarks/bench_engine.py --threads 1
    python benchmarks/bench_engine.py --sizes 2000x512,10000x8192 --impls ours,fp32,faiss
    python benchmarks/bench_engine.py --sizes 10000x512 --impls ours,fp32 --bf16-slowdown 8
    python benchmarks/bench_engine.py --big --threads 1     # N = 50,000, D = 2048, ours only
    python benchmarks/bench_engine.py --device cuda --sizes 10000x8192,50000x2048  # GPU table
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SIZES = [(n, d) for n in (500, 2000, 10000) for d in (512, 8192, 65536)]
IMPLS = ("ours", "fp32", "bf16", "fp16", "faiss", "sklearn", "numpy", "torch", "official")
NUM_CLASSES = 10
K = 3
NS_PER_PAIR_FALLBACK = 287.0  # ENGINE-NOTES: the official heapq loop per (row, column) pair
# our engine's impls and the kernel each forces (None: "auto")
ENGINE_KERNELS = {"ours": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
GPU_IMPLS = (*ENGINE_KERNELS, "torch")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        n, d = item.lower().split("x")
        sizes.append((int(n), int(d)))
    return sizes


def parse_impls(text: str) -> list[str]:
    impls = [item.strip() for item in text.split(",") if item.strip()]
    bad = [impl for impl in impls if impl not in IMPLS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown impls {bad}; valid: {', '.join(IMPLS)}")
    return impls


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=DEFAULT_SIZES,
        help="comma-separated NxD list (default: N in 500,2000,10000 × D in 512,8192,65536)",
    )
    parser.add_argument(
        "--impls",
        type=parse_impls,
        default=None,
        help=f"subset of {','.join(IMPLS)} (default: all but fp16 on CPU; "
        f"{','.join(GPU_IMPLS)} on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed (warm) runs at least; the median is shown"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of every method (small cells)"
    )
    parser.add_argument(
        "--rounds-below",
        type=float,
        default=1e11,
        help="cells of at most this many multiply-adds N²·D run --rounds rounds (others one)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="more timed runs of cheap cells until they add up to this (at most 100)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--skip-official-above",
        type=float,
        default=2e12,
        help="do not run the official algorithm above this many multiply-adds N²·D; estimate it",
    )
    parser.add_argument(
        "--skip-peers-above",
        type=float,
        default=2e12,
        help="do not run peers and bounds (not fp32) above this many multiply-adds N²·D",
    )
    parser.add_argument(
        "--once-above",
        type=float,
        default=2e12,
        help="time one run instead of --repeats above this many multiply-adds N²·D",
    )
    parser.add_argument(
        "--bf16-slowdown",
        type=float,
        default=1.0,
        help="simulate bf16 matmuls this many times slower in ours' speed probe",
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


def official_knn_modularity(features, labels, k: int) -> tuple[float, list]:
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
    edges = [(min(u, v), max(u, v)) for u, v in graph.edges()]
    return float(nx.community.modularity(graph, communities)), edges


def _symmetrize(n: int, rows, cols, sims):
    """(A + Aᵀ)/2 of directed k-NN entries: unique pairs (lo, hi) and their weights (numpy)."""
    import numpy as np

    keep = (rows != cols) & (sims != 0)
    rows, cols, sims = rows[keep], cols[keep], sims[keep].astype(np.float64)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    pairs, inverse = np.unique(lo.astype(np.int64) * n + hi, return_inverse=True)
    weights = np.bincount(inverse.reshape(-1), weights=sims, minlength=pairs.size) / 2
    return pairs // n, pairs % n, weights


def _drop_self(idx, sims, k: int):
    """Each row's k best other columns from k + 1 results that may include the row itself."""
    import numpy as np

    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    # keep the first k non-self entries: push self to the end (stable), then cut
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sims, order, 1)


def faiss_knn_modularity(features, labels, k: int) -> tuple[float, list]:
    """faiss-cpu IndexFlatIP exact k-NN on normalised rows + (A + Aᵀ)/2 + igraph modularity."""
    import faiss
    import igraph
    import numpy as np

    x = np.ascontiguousarray(features, dtype=np.float32)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, idx = index.search(x, k + 1)
    idx, sims = _drop_self(idx, sims, k)
    n = x.shape[0]
    src, dst, weight = _symmetrize(n, np.repeat(np.arange(n), k), idx.reshape(-1), sims.reshape(-1))
    graph = igraph.Graph(n=n, edges=np.stack([src, dst], 1).tolist())
    q = graph.modularity(np.asarray(labels).tolist(), weights=weight.tolist())
    return float(q), list(zip(src.tolist(), dst.tolist(), strict=True))


def sklearn_knn_modularity(features, labels, k: int) -> tuple[float, list]:
    """scikit-learn brute-force cosine k-NN + (A + Aᵀ)/2 + networkx modularity."""
    import networkx as nx
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float32)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit(x)
    dist, idx = nn.kneighbors(x)
    idx, sims = _drop_self(idx, 1.0 - dist, k)
    n = x.shape[0]
    src, dst, weight = _symmetrize(n, np.repeat(np.arange(n), k), idx.reshape(-1), sims.reshape(-1))
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from(zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True))
    labels = np.asarray(labels)
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    q = nx.community.modularity(graph, communities)
    return float(q), list(zip(src.tolist(), dst.tolist(), strict=True))


def _edge_digest(edges: list) -> tuple[str, int]:
    pairs = sorted((int(a), int(b)) for a, b in edges)
    return hashlib.sha1(json.dumps(pairs).encode()).hexdigest(), len(pairs)


class _KernelLog(logging.Handler):
    """Collects the engine's "kernel ..." debug lines (which path ran, and any fallback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _slow_bf16(factor: float) -> None:
    """Make ours' speed probe see bf16 matmuls ``factor`` times slower than they are."""
    import torch

    from dnn_modularity.graph import kernels

    real = kernels._time_matmul

    def slowed(a, b, runs, stop_above):
        seconds = real(a, b, runs, stop_above)
        return seconds * factor if a.dtype == torch.bfloat16 else seconds

    kernels._time_matmul = slowed


def _ours(impl: str, feats, labels) -> tuple[float, list]:
    """knn_graph + modularity (= knn_modularity, keeping the edges to compare)."""
    from dnn_modularity.graph import knn_graph, modularity

    graph = knn_graph(feats, k=K, kernel=ENGINE_KERNELS[impl])
    q = modularity(graph, labels)
    return q, list(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))


def run_worker(impl: str, n: int, d: int, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from dnn_modularity.graph import kernels, knn_modularity, normalize_features
    from dnn_modularity.graph.knn import choose_kernel

    if args.bf16_slowdown != 1.0:
        _slow_bf16(args.bf16_slowdown)
    feats, labels = make_features(n, d, args.seed)
    device = args.device
    cuda = device != "cpu"
    feats_np, labels_np = feats.numpy(), labels.numpy()
    if impl in GPU_IMPLS and cuda:
        feats, labels = feats.to(device), labels.to(device)
        torch.cuda.synchronize()
    kernel = ENGINE_KERNELS.get(impl)
    # warm the libraries up on a tiny problem (thread pools, BLAS/oneDNN kernels, CUDA context)
    tiny, tiny_labels = make_features(64, 64, args.seed + 1)
    if impl in ENGINE_KERNELS:
        knn_modularity(tiny.to(device), tiny_labels.to(device), k=K, kernel=kernel or "float32")
        kernels.clear_speed_cache()
    if impl == "faiss":
        import faiss

        faiss.omp_set_num_threads(args.threads)
        faiss_knn_modularity(tiny.numpy(), tiny_labels.numpy(), K)
    elif impl == "sklearn":
        sklearn_knn_modularity(tiny.numpy(), tiny_labels.numpy(), K)
    elif impl == "official":
        official_knn_modularity(tiny.numpy(), tiny_labels.numpy(), K)
    else:
        _ = tiny.to(device) @ tiny.to(device).T
    extra: dict = {}
    if impl == "ours":
        # the one-time probe on its own (then forgotten, so the first timed call pays it again)
        rows = normalize_features(feats)
        start = time.perf_counter()
        choice = choose_kernel(rows, K)
        # the bf16 rows the probe converted are the sweep's own when the screen is chosen: that
        # conversion is not probe overhead
        reused = choice.rows.seconds if choice.rows is not None else 0.0
        extra["probe_s"] = time.perf_counter() - start - reused
        extra["probe_reused_s"] = reused
        extra["symmetric"] = kernels.symmetric_route() if device == "cpu" else "torch"
        del rows
        extra["path"] = f"{choice.name} ({choice.reason})"
        kernels.clear_speed_cache()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    peak_reset = _reset_peak_rss()
    base_rss = _rss_kib("VmRSS")
    engine_log = _KernelLog()
    logging.getLogger("dnn_modularity.graph.knn").addHandler(engine_log)
    logging.getLogger("dnn_modularity.graph.knn").setLevel(logging.DEBUG)
    value, edges = None, None
    once = impl == "official" or n * n * d > args.once_above
    # Run 0 is cold (first call at this size: page faults of fresh buffers, kernels compiled for
    # new shapes): it gives the peak memory, and the time of a one-run cell. The timed runs then
    # are warm (as in a monitor that measures layer after layer): --repeats of them, more for
    # cheap cells until they add up to --min-seconds (at most 100), median shown.
    times, cpus = [], []
    peak_mib, first_time = float("nan"), float("nan")
    run = 0
    while True:
        if run > 0 and (once or (run > args.repeats and sum(times) >= args.min_seconds)):
            break
        if run > 100:
            break
        start, start_cpu = time.perf_counter(), time.process_time()
        if impl in ENGINE_KERNELS:
            value, edges = _ours(impl, feats, labels)
        elif impl == "official":
            value, edges = official_knn_modularity(feats_np, labels_np, K)
        elif impl == "faiss":
            value, edges = faiss_knn_modularity(feats_np, labels_np, K)
        elif impl == "sklearn":
            value, edges = sklearn_knn_modularity(feats_np, labels_np, K)
        elif impl == "numpy":
            out = feats_np @ feats_np.T
            del out
        elif impl == "torch":
            out = feats @ feats.T
            if cuda:
                torch.cuda.synchronize()
            del out
        else:
            raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if cuda:
            torch.cuda.synchronize()
        if run == 0:
            first_time = time.perf_counter() - start
            if cuda:
                peak_mib = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
            elif peak_reset:
                peak_mib = (_rss_kib("VmHWM") - base_rss) / 1024
            if once:
                times.append(first_time)
                cpus.append(time.process_time() - start_cpu)
        else:
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        run += 1
    result = {
        "impl": impl,
        "n": n,
        "d": d,
        "time": statistics.median(times),
        "times": times,
        "first_time": first_time,
        "cpu": statistics.median(cpus),
        "value": value,
        "peak_mib": peak_mib,
        **extra,
    }
    if edges is not None:
        result["edges"], result["num_edges"] = _edge_digest(edges)
    if engine_log.lines:
        result["engine_log"] = sorted(set(engine_log.lines))
    return result


# --------------------------------------------------------------------------- driver side


def spawn(impl: str, n: int, d: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, str(n), str(d)]
    cmd += ["--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed)]
    cmd += ["--repeats", str(args.repeats), "--once-above", str(args.once_above)]
    cmd += ["--min-seconds", str(args.min_seconds)]
    cmd += ["--bf16-slowdown", str(args.bf16_slowdown)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"impl": impl, "n": n, "d": d, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_description() -> tuple[str, list[str]]:
    """CPU model name and which of :data:`CPU_FLAGS` it has (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if (line.startswith("model name") and model in ("?", "")) or line.startswith(
                "model name"
            ):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def _with_blas(name: str, module: object) -> str:
    """A library's version and the BLAS it was built with: ``"numpy 2.4.6 (scipy-openblas …)"``."""
    text = f"{name} {module.__version__}"
    try:
        blas = module.show_config(mode="dicts")["Build Dependencies"]["blas"]
        text += f" ({blas.get('name', '?')} {blas.get('version', '')})".rstrip()
    except Exception:  # an older show_config without dicts: the version alone
        pass
    return text


def _versions() -> str:
    import numpy as np
    import scipy
    import torch

    # numpy's and scipy's BLAS (each its own build): the engine's syrk calls go to both
    parts = [f"torch {torch.__version__}", _with_blas("numpy", np), _with_blas("scipy", scipy)]
    for name in ("faiss", "sklearn", "igraph", "networkx"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except ImportError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def gpu_description(device: str) -> str:
    """The GPU's name, compute capability, memory and the CUDA/cuDNN versions of torch."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return (
        f"GPU {props.name} (compute capability {props.major}.{props.minor}, "
        f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )


def header(args: argparse.Namespace) -> list[str]:
    model, flags = cpu_description()
    lines = [
        "# dnn-modularity engine benchmark",
        f"# date {time.strftime('%Y-%m-%d %H:%M:%S')}, python {platform.python_version()}",
        f"# {_versions()}",
        f"# device {args.device}, threads {args.threads}, CPU {model} ({os.cpu_count()} cores), "
        f"flags: {' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)}",
        f"# load average at start {os.getloadavg()[0]:.2f}; each method in a fresh process: one "
        f"cold run (peak memory), then the median of >= {args.repeats} warm runs (more until "
        f"{args.min_seconds:g} s; above {args.once_above:.0e} multiply-adds the cold run only); "
        f"cells of at most {args.rounds_below:.0e} multiply-adds: {args.rounds} interleaved rounds "
        "of all methods, warm times pooled (times: their median; ratios: the median of the "
        "per-round ratios, each round's methods run back to back)",
        f"# features: N samples × D dims, {NUM_CLASSES} classes, mean·0.3 + N(0, 1); k = {K}, "
        "cosine",
    ]
    if args.device != "cpu":
        lines.append(f"# {gpu_description(args.device)}")
    if args.bf16_slowdown != 1.0:
        lines.append(
            f"# SIMULATED: ours' speed probe sees bf16 matmuls {args.bf16_slowdown:g}x slower "
            "than they are"
        )
    if args.note:
        lines.append(f"# note: {args.note}")
    return lines


def fmt_time(t: float) -> str:
    """Seconds with at least two significant digits (milliseconds matter in the small cells)."""
    if t < 0.1:
        return f"{t:.4f}"
    return f"{t:.3f}" if t < 100 else f"{t:.1f}"


def _cell(result: dict | None) -> str:
    if result is None:
        return "not run"
    if "error" in result:
        return f"failed: {result['error']}"
    return fmt_time(result["time"])


def _ratio(a: dict | None, b: dict | None) -> str:
    """a's time over b's: with several rounds, the median of the per-round ratios.

    A round runs every method back to back, so a ratio within one round compares them in the same
    phase of a shared VM's drifting speed; the ratio of the pooled medians would not.
    """
    if not a or not b or "error" in a or "error" in b:
        return "-"
    rounds_a, rounds_b = a.get("round_times", []), b.get("round_times", [])
    if len(rounds_a) > 1 and len(rounds_a) == len(rounds_b):
        return f"{statistics.median(x / y for x, y in zip(rounds_a, rounds_b, strict=True)):.2f}"
    return f"{a['time'] / b['time']:.2f}"


def _agreement(ours: dict | None, peer: dict | None) -> str:
    """|ΔQ| and edge-set agreement of a peer with ours."""
    if not ours or not peer or "error" in ours or "error" in peer or peer.get("value") is None:
        return "-"
    dq = abs(peer["value"] - ours["value"])
    same = "same edges" if peer["edges"] == ours["edges"] else "EDGES DIFFER"
    return f"{dq:.1e}, {same}"


def _pool(rounds: list[dict]) -> dict:
    """One result from several rounds of one method: all warm times pooled, their median."""
    if len(rounds) == 1 or any("error" in r for r in rounds):
        return rounds[0] if len(rounds) == 1 else next(r for r in rounds if "error" in r)
    pooled = dict(rounds[0])
    pooled["times"] = [t for r in rounds for t in r["times"]]
    pooled["time"] = statistics.median(pooled["times"])
    pooled["cpu"] = statistics.median(r["cpu"] for r in rounds)
    pooled["rounds"] = len(rounds)
    pooled["round_times"] = [statistics.median(r["times"]) for r in rounds]
    return pooled


def run_cells(args: argparse.Namespace) -> list[tuple[int, int, dict]]:
    """Every method of every cell; cells below --rounds-below run --rounds interleaved rounds.

    A shared VM's speed drifts by tens of percent within minutes: interleaving the methods
    (ours, faiss, ..., ours, faiss, ...) gives each the same conditions.
    """
    cells = []
    for n, d in args.sizes:
        work = n * n * d
        runs: dict[str, list[dict]] = {}
        skipped = {
            impl
            for impl in args.impls
            if (impl == "official" and work > args.skip_official_above)
            or (
                impl in ("faiss", "sklearn", "numpy", "torch", "bf16", "fp16")
                and work > args.skip_peers_above
            )
        }
        rounds = args.rounds if work <= args.rounds_below else 1
        for _ in range(rounds):
            for impl in args.impls:
                if impl not in skipped and not (impl == "official" and impl in runs):
                    runs.setdefault(impl, []).append(spawn(impl, n, d, args))
        results: dict[str, dict | None] = {
            impl: (_pool(runs[impl]) if impl in runs else None) for impl in args.impls
        }
        cells.append((n, d, results))
        print(f"# done N={n} D={d} ({rounds} round{'s' if rounds > 1 else ''})", flush=True)
    return cells


def print_tables(cells: list[tuple[int, int, dict]], args: argparse.Namespace) -> None:
    ns_per_pair = []
    for n, _, r in cells:
        off, mm = r.get("official"), r.get("torch")
        if off and mm and "error" not in off and "error" not in mm:
            ns_per_pair.append(max(0.0, off["cpu"] - mm["cpu"]) / (n * n) * 1e9)
    per_pair = sum(ns_per_pair) / len(ns_per_pair) if ns_per_pair else NS_PER_PAIR_FALLBACK
    # flop rate of the bare torch matmul in the largest cell where it ran (for estimates)
    mm_rate = 0.0
    for n, d, r in sorted(cells, key=lambda c: c[0] * c[0] * c[1]):
        mm = r.get("torch")
        if mm and "error" not in mm:
            mm_rate = 2 * n * n * d / mm["cpu"]

    print("\n## Times (wall seconds, median) and ratios")
    print(
        "| N | D | ours | path chosen, symmetric blocks (probe s, % of ours' first call) | "
        "ours fp32 | ours bf16 | faiss + igraph | "
        "sklearn + networkx | numpy X·Xᵀ (syrk) | torch mm (full) | official | "
        "ours / faiss | ours / sklearn | ours / numpy | fp32 / numpy | bf16 / fp32 | "
        "official / ours |"
    )
    print("|---:|---:|---:|---|" + "---:|" * 13)
    for n, d, r in cells:
        ours = r.get("ours")
        path = _path_text(ours)
        off = r.get("official")
        off_text, off_time = "not run", None
        if off is not None:
            off_text, off_time = _cell(off), off.get("time")
        elif "official" in args.impls and mm_rate:
            off_time = n * n * per_pair * 1e-9 + 2 * n * n * d / mm_rate
            off_text = f"{fmt_time(off_time)} estimated"
        official_ratio = "-"
        if off_time is not None and ours and "error" not in ours:
            official_ratio = f"{off_time / ours['time']:.1f}"
        print(
            f"| {n} | {d} | {_cell(ours)} | {path} | {_cell(r.get('fp32'))} | "
            f"{_cell(r.get('bf16'))} | {_cell(r.get('faiss'))} | {_cell(r.get('sklearn'))} | "
            f"{_cell(r.get('numpy'))} | {_cell(r.get('torch'))} | {off_text} | "
            f"{_ratio(ours, r.get('faiss'))} | {_ratio(ours, r.get('sklearn'))} | "
            f"{_ratio(ours, r.get('numpy'))} | {_ratio(r.get('fp32'), r.get('numpy'))} | "
            f"{_ratio(r.get('bf16'), r.get('fp32'))} | "
            f"{official_ratio} |"
        )
    print(
        f"# official CPU ns per (row, column) pair beyond its matmul: {per_pair:.0f} "
        f"({f'from {len(ns_per_pair)} runs' if ns_per_pair else 'fallback from ENGINE-NOTES'}); "
        "estimated official time = N² × that + 2·N²·D / the torch matmul's measured flop rate"
    )

    print("\n## Same result: |Q − Q ours| and edge sets; Q; peak memory (MiB)")
    print(
        "| N | D | Q ours | fp32 | bf16 | faiss | sklearn | official | peak MiB ours | "
        "peak MiB official |"
    )
    print("|---:|---:|---:|---|---|---|---|---|---:|---:|")
    for n, d, r in cells:
        ours = r.get("ours")
        if not ours or "error" in ours:
            print(f"| {n} | {d} | {_cell(ours)} | | | | | | | |")
            continue
        off = r.get("official")
        mem_off = f"{off['peak_mib']:.0f}" if off and "error" not in off else "not run"
        print(
            f"| {n} | {d} | {ours['value']:.9f} | {_agreement(ours, r.get('fp32'))} | "
            f"{_agreement(ours, r.get('bf16'))} | {_agreement(ours, r.get('faiss'))} | "
            f"{_agreement(ours, r.get('sklearn'))} | {_agreement(ours, off)} | "
            f"{ours['peak_mib']:.0f} | {mem_off} |"
        )


def _path_text(ours: dict | None) -> str:
    """The kernel ours chose, its route and the decision's cost as a share of the first call."""
    if not ours or "error" in ours:
        return "-"
    # the decision is made on the first call at a shape (then cached or, below the probing
    # threshold, a few µs): its share of that first, cold call
    share = 100 * ours["probe_s"] / ours["first_time"]
    route = "BLAS syrk" if ours.get("symmetric") == "numpy" else "torch sub-strips"
    path = f"{ours['path']}, {route} ({ours['probe_s']:.4f}, {share:.2f} %)"
    if any("from row" in line for line in ours.get("engine_log", [])):
        path += "; fell back to float32"
    return path


def print_gpu_tables(cells: list[tuple[int, int, dict]]) -> None:
    """The GPU table: ours (auto) against each forced kernel and the full float32 torch.mm."""
    print("\n## Times (wall seconds, median) and ratios (GPU)")
    print(
        "| N | D | ours | path chosen (probe s, % of ours' first call) | ours fp32 | ours bf16 | "
        "ours fp16 | torch mm fp32 (full) | ours / fp32 | ours / torch mm | bf16 / fp32 | "
        "fp16 / fp32 | Q ours | fp32, bf16, fp16: |ΔQ|, edges | peak MiB ours | "
        "peak MiB torch mm |"
    )
    print("|---:|---:|---:|---|" + "---:|" * 9 + "---|---:|---:|")
    for n, d, r in cells:
        ours, mm = r.get("ours"), r.get("torch")
        q = f"{ours['value']:.9f}" if ours and "error" not in ours else "-"
        agree = "; ".join(_agreement(ours, r.get(impl)) for impl in ("fp32", "bf16", "fp16"))
        mem = [f"{x['peak_mib']:.0f}" if x and "error" not in x else "-" for x in (ours, mm)]
        print(
            f"| {n} | {d} | {_cell(ours)} | {_path_text(ours)} | {_cell(r.get('fp32'))} | "
            f"{_cell(r.get('bf16'))} | {_cell(r.get('fp16'))} | {_cell(mm)} | "
            f"{_ratio(ours, r.get('fp32'))} | {_ratio(ours, mm)} | "
            f"{_ratio(r.get('bf16'), r.get('fp32'))} | {_ratio(r.get('fp16'), r.get('fp32'))} | "
            f"{q} | {agree} | {mem[0]} | {mem[1]} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.impls is None:
        cpu_impls = [impl for impl in IMPLS if impl != "fp16"]  # fp16: a GPU candidate only
        args.impls = list(GPU_IMPLS) if args.device != "cpu" else cpu_impls
    _set_thread_env(args.threads)
    if args.worker:
        impl, n, d = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(run_worker(impl, n, d, args)))
        return 0
    for line in header(args):
        print(line, flush=True)
    if args.big:
        ours = spawn("ours", 50_000, 2048, args)
        official_gib = (20 * 50_000**2 + 4 * 50_000 * 2048) / 2**30
        print("| N | D | knn_modularity (s) | path chosen | Q | peak memory (MiB) |")
        print("|---:|---:|---:|---|---:|---:|")
        if "error" in ours:
            print(f"| 50000 | 2048 | failed: {ours['error']} | | | |")
            return 1
        print(
            f"| 50000 | 2048 | {fmt_time(ours['time'])} | {ours['path']} | {ours['value']:.6f} | "
            f"{ours['peak_mib']:.0f} |"
        )
        print(f"# the official algorithm would need ~{official_gib:.0f} GiB for its dense arrays")
        return 0
    cells = run_cells(args)
    if args.device == "cpu":
        print_tables(cells, args)
    else:
        print_gpu_tables(cells)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
