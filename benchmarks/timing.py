"""The one timing helper of the benchmarks: a callable's device time and its per-call time, medians.

- ``device_ms``: reps back to back without a host sync, as a training or decode loop runs them: the GPU's time per
  call whenever the host's launch cost is shorter (calls under ~2 ms are timed several per rep).
- ``call_ms``: each call timed alone after the L2 cache is flushed, as ``triton.testing.do_bench`` does: a call whose
  host work (Python, descriptors, launches) outlasts its GPU work shows that cost, which is what a user's eager
  decode step (one call per layer, outside a CUDA graph) pays.

On CPU both are wall-clock medians. ``interleaved`` times several backends of one case in turn, the order rotated
each round, so that the card's clock drifting over a run falls on every backend alike.
"""
from __future__ import annotations

import statistics
import time

import torch

__all__ = ["device_ms", "call_ms", "interleaved", "kernel_times", "copy_bandwidth", "sync", "warm_up"]


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _wall_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def device_ms(fn, warmup=3, reps=10, inner=None):
    """Median milliseconds per call, reps back to back (see the module docstring)."""
    if not torch.cuda.is_available():
        return _wall_ms(fn, warmup, reps)
    for _ in range(warmup):
        fn()
    sync()
    if inner is None:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        inner = max(1, min(50, int(2.0 / max(a.elapsed_time(b), 1e-3))))
    events = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        events.append((a, b))
    sync()
    return statistics.median(a.elapsed_time(b) / inner for a, b in events)


_FLUSH: dict = {}


def call_ms(fn, warmup=25, reps=100):
    """Median milliseconds of one call after an L2 flush, each call between its own events (see the docstring)."""
    if not torch.cuda.is_available():
        return _wall_ms(fn, min(warmup, 3), min(reps, 10))
    dev = torch.cuda.current_device()
    if dev not in _FLUSH:                                     # 256 MB: more than any GPU's L2
        _FLUSH[dev] = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    flush = _FLUSH[dev]
    for _ in range(warmup):
        fn()
    sync()
    events = []
    for _ in range(reps):
        flush.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        events.append((a, b))
    sync()
    return statistics.median(a.elapsed_time(b) for a, b in events)


def warm_up(seconds: float = 3.0) -> None:
    """Matrix products for ``seconds`` before any timing, so that the card's clocks (and the host's) have left
    their idle states: the first cases of a run on a fresh machine otherwise read slower than the rest."""
    if not torch.cuda.is_available():
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(10):
            a @ a
        sync()


def interleaved(backends, run, rounds):
    """{backend: (median over rounds of ``run(backend, first_round)[0]``, the first round's second value, [first
    values per round])}: the backends of one case timed in turn, the order rotated each round; a backend that raises
    maps to its exception."""
    got, once = {b: [] for b in backends}, {}
    for r in range(rounds):
        for b in backends[r % len(backends):] + backends[:r % len(backends)]:
            if isinstance(got[b], Exception):
                continue
            try:
                ms, extra = run(b, r == 0)
            except Exception as e:  # keep going; the JSON says what failed
                got[b] = e
                continue
            got[b].append(ms)
            once.setdefault(b, extra)
    return {b: v if isinstance(v, Exception) else (statistics.median(v), once[b], v) for b, v in got.items()}


def kernel_times(fn, reps=5, top=8):
    """Milliseconds per call of each CUDA kernel ``fn`` launches (the profiler over ``reps`` calls), longest first."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        sync()
    ker = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            ker[e.key[:60]] = round(t / reps / 1e3, 4)
    return dict(sorted(ker.items(), key=lambda x: -x[1])[:top])


def copy_bandwidth(nbytes=2 << 30):
    """The card's device-to-device copy rate in GB/s (bytes read + written)."""
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    return 2 * nbytes / device_ms(lambda: y.copy_(x), warmup=3, reps=10) / 1e6
