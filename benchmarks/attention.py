"""Attention kernel benchmark: SDPA full causal (the full-attention baseline), FlexAttention (same sink + window
mask, compiled, analytic BlockMask) and our Triton kernels, on identical inputs in one run.

    python benchmarks/attention.py                      # the issue's grid (GPU)
    python benchmarks/attention.py --quick              # 32k only, Qwen3-4B shape

Forward, forward+backward, and decode (one query against 32k / 128k caches). Writes JSON (device, versions,
medians in ms, effective TFLOP/s counting only the (query, key) pairs the mask keeps, GB/s of K/V bytes read for
decode, the card's measured copy bandwidth) to benchmarks/results/ and prints a table. Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs

SHAPES = {"qwen3-4b": (32, 8, 128), "smollm2": (9, 3, 64)}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timeit(fn, warmup=3, reps=10, inner=None, sync_each=False):
    """Median milliseconds per call. On CUDA each rep is ``inner`` calls between one event pair (by default enough
    calls for ~2 ms), and the reps follow each other without a host sync, as ``triton.testing.do_bench`` times: the
    host enqueues ahead of the GPU as in a training or decode loop, so what is measured is the GPU's time per call
    whenever the host's launch cost is shorter, and the launch cost where it is not (small shapes).

    ``sync_each``: a host sync before every rep instead, so that each rep starts on an idle GPU and also counts the
    host's time to launch the first kernel (one call's latency; the benchmark's method before session 10)."""
    for _ in range(warmup):
        fn()
    _sync()
    if torch.cuda.is_available():
        if inner is None:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            inner = max(1, min(50, int(2.0 / max(a.elapsed_time(b), 1e-3))))
        events = []
        for _ in range(reps):
            if sync_each:
                torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            events.append((a, b))
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) / inner for a, b in events)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def kernel_times(fn, reps=5, top=8):
    """Milliseconds per call of each CUDA kernel ``fn`` launches (the profiler over ``reps`` calls), the ``top``
    longest first; for the sweeps' per-kernel breakdowns."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    ker = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            ker[e.key[:60]] = round(t / reps / 1e3, 4)
    return dict(sorted(ker.items(), key=lambda x: -x[1])[:top])


def copy_bandwidth(nbytes=2 << 30):
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    ms = timeit(lambda: y.copy_(x), warmup=3, reps=10)
    return 2 * nbytes / ms / 1e6          # GB/s (read + write)


def run_case(backend, mode, q, k, v, w, s, sync=True):
    """(steady-state median ms, median ms of one call from an idle GPU or None without ``sync``) of ``backend`` on
    these inputs."""
    kw = dict(sliding_window_size=w, keep_first=s)
    if backend == "sdpa-full":
        fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] == k.shape[2],
                                                     enable_gqa=q.shape[1] != k.shape[1])
    else:
        fwd = lambda: swaa_attention(q, k, v, backend=backend, **kw)
    both = lambda fn: (timeit(fn), timeit(fn, sync_each=True) if sync else None)
    if mode == "fwd" or mode == "decode":
        with torch.no_grad():
            return both(fwd)
    do = torch.randn_like(q)

    def fb():
        out = fwd()
        torch.autograd.grad(out, (q, k, v), do)
    return both(fb)


def interleaved(backends, run, rounds):
    """{backend: (median over rounds of the steady ms, the first round's synced ms, [steady ms per round])} with the
    backends timed in turn, the order rotated each round, so that the card's clock drifting over a run (it runs
    1725-1980 MHz as load and temperature change: session 10) falls on every backend alike; a backend that raises
    maps to its exception."""
    got, sync = {b: [] for b in backends}, {}
    for r in range(rounds):
        for b in backends[r % len(backends):] + backends[:r % len(backends)]:
            if isinstance(got[b], Exception):
                continue
            try:
                ms, ms1 = run(b, r == 0)
            except Exception as e:  # keep going; the JSON says what failed
                got[b] = e
                continue
            got[b].append(ms)
            sync.setdefault(b, ms1)
    return {b: v if isinstance(v, Exception) else (statistics.median(v), sync[b], v) for b, v in got.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", default=None, help="comma list of " + ",".join(SHAPES))
    ap.add_argument("--lengths", default=None, help="comma list, e.g. 8192,32768,131072")
    ap.add_argument("--modes", default="fwd,fwdbwd,decode")
    ap.add_argument("--backends", default="sdpa-full,flex,triton")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (median over them)")
    a = ap.parse_args(argv)
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    shapes = (a.shapes or ("qwen3-4b" if a.quick else "qwen3-4b,smollm2")).split(",")
    lengths = [int(x) for x in (a.lengths or ("32768" if a.quick else "8192,32768,131072")).split(",")]
    modes = a.modes.split(",")
    backends = a.backends.split(",")
    windows = [(2048, 100)] if a.quick else [(2048, 0), (2048, 100), (4096, 0), (4096, 100)]
    dtype = torch.bfloat16
    rows = []
    bw = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}: copy bandwidth {bw:.0f} GB/s")

    import triton
    out = Path(a.out or "benchmarks/results/attention_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    res = dict(benchmark="attention", device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__, python=platform.python_version(), dtype="bfloat16", batch=1,
               copy_bandwidth_gbps=round(bw, 1),
               rounds=a.rounds,
               note="median_ms: median over `rounds` interleaved rounds (the backends of a case timed in turn, "
                    "the order rotated each round; rounds_ms lists them) of medians of 10 timed reps after 3 "
                    "warm-ups, CUDA events, reps back to back without a host sync (the GPU's time per call when "
                    "the host launches ahead, as triton.testing.do_bench times; calls under 2 ms timed several per "
                    "rep); median_ms_sync: the same with a host sync before each rep in the first round, so each "
                    "starts on an idle GPU and counts the host's launch time (the method of the results before "
                    "session 10); TFLOP/s (from median_ms) count only visible pairs "
                    "(fwd 4*pairs*D*H, fwd+bwd 10*pairs*D*H); decode GB/s = K/V bytes the mask needs / time",
               rows=rows)

    def record(**r):
        rows.append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")          # as it goes: a cut run keeps its rows

    def record_interleaved(got, key, digits, derived):
        """One row per backend of an ``interleaved`` case (``key``: its shape, mode, length, window, sinks): the
        medians, the rounds and the fields ``derived`` computes from the steady median, or the error raised."""
        for be, res_be in got.items():
            if isinstance(res_be, Exception):
                record(**key, backend=be, error=str(res_be).splitlines()[0][:200])
                continue
            ms, ms1, per_round = res_be
            record(**key, backend=be, median_ms=round(ms, digits), median_ms_sync=round(ms1, digits), **derived(ms),
                   rounds_ms=[round(x, digits) for x in per_round])

    for shape in shapes:
        hq, hkv, d = SHAPES[shape]
        for n in lengths:
            q = torch.randn(1, hq, n, d, device="cuda", dtype=dtype, requires_grad=True)
            k = torch.randn(1, hkv, n, d, device="cuda", dtype=dtype, requires_grad=True)
            v = torch.randn(1, hkv, n, d, device="cuda", dtype=dtype, requires_grad=True)
            for mode in [m for m in modes if m != "decode"]:
                if mode == "fwdbwd" and n > 32768:
                    continue
                mult = 4 if mode == "fwd" else 10        # fwd: 2 matmuls; fwd+bwd: 2 + 5 (dq, dk, dv, dp, recompute)
                full_pairs = visible_pairs(n, n, None, 0)
                if "sdpa-full" in backends:
                    ms, ms1 = run_case("sdpa-full", mode, q, k, v, None, 0)
                    record(shape=shape, mode=mode, n=n, backend="sdpa-full", window=None, keep_first=0,
                           median_ms=round(ms, 3), tflops=round(mult * full_pairs * d * hq / ms / 1e9, 1),
                           median_ms_sync=round(ms1, 3))
                for w, s in windows:
                    pairs = visible_pairs(n, n, w, s)
                    got = interleaved([b for b in backends if b != "sdpa-full"],
                                      lambda be, sync: run_case(be, mode, q, k, v, w, s, sync), a.rounds)
                    record_interleaved(got, dict(shape=shape, mode=mode, n=n, window=w, keep_first=s), 3,
                                       lambda ms: dict(tflops=round(mult * pairs * d * hq / ms / 1e9, 1)))
            del q, k, v
        if "decode" in modes:
            for n in ([32768] if a.quick else [32768, 131072]):
                k = torch.randn(1, hkv, n, d, device="cuda", dtype=dtype)
                v = torch.randn_like(k)
                q = torch.randn(1, hq, 1, d, device="cuda", dtype=dtype)
                for w, s in [(None, 0)] + windows[:2]:
                    keys = n if w is None else min(n, w + s)
                    kv_bytes = 2 * keys * hkv * d * 2
                    got = interleaved([b for b in backends if b != "sdpa-full"] + (["sdpa"] if w is None else []),
                                      lambda be, sync: run_case(be, "decode", q, k, v, w, s, sync), a.rounds)
                    record_interleaved(got, dict(shape=shape, mode="decode", n=n, window=w, keep_first=s), 4,
                                       lambda ms: dict(kv_gbps=round(kv_bytes / ms / 1e6, 1),
                                                       frac_of_copy_bw=round(kv_bytes / ms / 1e6 / bw, 3)))
                del q, k, v
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
