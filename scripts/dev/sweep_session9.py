"""Developer sweep (GPU), session 9: where a forward+backward's time goes between kernels, and the Gluon dK/dV
(swaa/attention/triton/_bwd_gluon.py) at head_dim 64 and 128.

PART=gaps: for each shape, the forward+backward timed as the benchmark does (one call per event pair) and back to
back (``inner`` calls per pair), the host's time to enqueue one call, and the GPU timeline of one call from the
profiler (each kernel's start and length, the idle time before it). Then forward+backward with the Gluon dK/dV on
and off. Writes $OUT/sweep_session9_<part>.json as it goes. Not a test."""
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.attention import kernel_times, timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T
from sweep_log import SweepLog

PART = os.environ.get("PART", "gaps")
log = SweepLog(f"sweep_session9_{PART}", "median ms (benchmarks.attention.timeit); tflops = 10*pairs*D*H/t "
               "(visible pairs only); timeline: kernel start offsets and idle gaps in us from the profiler",
               hang_s=float(os.environ.get("HANG_S", "100")), part=PART)


def timeline(fn):
    """(name, start us, duration us, idle us before it) of each GPU kernel of one call, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    ev = []
    for e in prof.profiler.kineto_results.events():
        if e.device_type() == torch.autograd.DeviceType.CUDA and e.duration_ns() > 0:
            ev.append((e.start_ns(), e.duration_ns(), e.name()[:40]))
    ev.sort()
    if not ev:
        return []
    t0, out, end = ev[0][0], [], ev[0][0]
    for st, du, name in ev:
        out.append((name, round((st - t0) / 1e3, 1), round(du / 1e3, 1), round(max(st - end, 0) / 1e3, 1)))
        end = max(end, st + du)
    return out


def case(name, n, hq, hkv, d, w, s, gluon_bwd):
    mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(hq), mk(hkv), mk(hkv)
    do = torch.randn_like(q)
    pairs = visible_pairs(n, n, w, s)
    for be in ("flex", "triton"):
        if log.out_of_time():
            return
        T._GLUON_BWD = gluon_bwd
        fn = lambda: torch.autograd.grad(swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be),
                                         (q, k, v), do)
        try:
            one = timeit(fn)
            four = timeit(fn, inner=4)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(4):
                fn()
            host = (time.perf_counter() - t) / 4 * 1e3       # enqueue time per call while the GPU runs behind
            torch.cuda.synchronize()
            r = dict(kind="fwdbwd", shape=name, n=n, window=w, keep_first=s, backend=be,
                     gluon_bwd=gluon_bwd if be == "triton" else None, ms=round(one, 3), ms_back_to_back=round(four, 3),
                     host_ms=round(host, 3), tflops=round(10 * pairs * d * hq / one / 1e9, 1))
            if be == "triton":
                r["kernels_ms"] = kernel_times(fn)
                r["ran_gluon_bwd"] = T.LAST_BWD_GLUON
                r["timeline"] = timeline(fn)
            log.rec(**r)
        except Exception as e:
            log.rec(kind="fwdbwd", shape=name, n=n, backend=be, gluon_bwd=gluon_bwd, error=str(e)[-400:])
    torch.cuda.empty_cache()


if PART == "gaps":
    for shape in [("qwen3-4b", 32768, 32, 8, 128, 2048, 100), ("smollm2", 32768, 9, 3, 64, 2048, 100),
                  ("smollm2", 8192, 9, 3, 64, 4096, 100), ("qwen3-4b", 8192, 32, 8, 128, 2048, 100)]:
        for g in (True, False):
            case(*shape, gluon_bwd=g)
    T._GLUON_BWD = False
    log.save()
