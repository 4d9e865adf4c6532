"""Developer sweep (GPU), written in session 11 (no GPU was lent then): why the forward loses 10-15% per visible
pair from 32k to 128k when Flex does not (session 10: ours 555-575 TFLOP/s at 32k, 480-540 at 128k, Flex 351-380 at
both; in session 8's sweep the non-persistent triton-language forward took 4.0-4.4 times its 32k time at 128k and
Flex 3.75-3.83 times, so the persistent schedule alone is not it).

PART=mem: the same work laid out four ways, each case's backends interleaved over rounds (benchmarks.attention):
  - batch 1 x 32k, batch 4 x 32k, batch 2 x 64k, batch 1 x 128k: if 4 x 32k runs at the 32k rate, the loss comes
    with the sequence's length (the span of one head's keys, how far the window walks), not with the tensors' size;
  - layout "bhsd" (contiguous (B, H, L, D), the benchmark's), "bshd" ((B, L, H, D) seen transposed, what the model
    integration passes) and "pad" ((B, H, L + 128, D) sliced to L: one head's slab no longer a power of two of
    bytes, so that heads stop landing on the same memory channels if they did).
  Backends: ours (the Gluon forward), ours with the triton-language forward ("triton-tl") and Flex; W=2048 with
  S = 100 and 0. Kernel times from the profiler beside the steady times.
PART=prof: DRAM and SM activity while the 32k and the 128k forward run back to back for ~2 s each: nvidia-smi's
  utilization counters every 20 ms (always there), then Nsight Compute on one launch of each length if ``ncu`` is
  installed (speed of light, memory workload, scheduler, warp state), its CSV copied to $OUT.
PART=dq: the Gluon dQ kernel (SWAA_TRITON_GLUON_DQK, written this session offline): its gradients against the
  default backward's and attention_ref's on odd shapes, varlen and head_dim 64, with and without the preamble; if all
  agree, forward+backward at 32k and 128k (W=2048, S = 100 and 0) for the default and each configuration in $DQK_CFGS
  (BLOCK_N,K_STAGES,V_STAGES;...), interleaved over rounds, kernel times from the profiler.
PART=all (default): dq, then mem, then prof. Writes $OUT/sweep_session11_<part>.json as it goes. Not a test."""
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmarks.attention import interleaved, kernel_times, timeit
from swaa.attention import swaa_attention
from swaa.attention.masks import visible_pairs
import swaa.attention.triton as T
from sweep_log import SmiTrace, SweepLog, fwdbwd, rel

PART = os.environ.get("PART", "all")
OUT = os.environ.get("OUT", ".")
HQ, HKV, D, W = 32, 8, 128, 2048
log = SweepLog(f"sweep_session11_{PART}", "median ms, back to back (benchmarks.attention.timeit); tflops = 4 * pairs "
               "* D * H * B / ms, visible pairs only; kernels_ms from the profiler", part=PART,
               hang_s=float(os.environ.get("HANG_S", "120")), budget_s=float(os.environ.get("SWEEP_BUDGET_S", "420")))


def inputs(b, n, layout):
    """q, k, v of batch ``b``, length ``n`` in ``layout`` (bhsd / bshd / pad), all (B, H, L, D) views."""
    def mk(h):
        if layout == "bshd":
            return torch.randn(b, n, h, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        if layout == "pad":
            return torch.randn(b, h, n + 128, D, device="cuda", dtype=torch.bfloat16)[:, :, :n]
        return torch.randn(b, h, n, D, device="cuda", dtype=torch.bfloat16)
    return mk(HQ), mk(HKV), mk(HKV)


def forward(backend, q, k, v, s):
    """A no-grad forward callable; "triton-tl" is ours with the Gluon forward off (the triton-language kernel)."""
    be = "triton" if backend == "triton-tl" else backend

    def fn():
        T._GLUON_FWD = False if backend == "triton-tl" else None
        with torch.no_grad():
            return swaa_attention(q, k, v, sliding_window_size=W, keep_first=s, backend=be)
    return fn


def mem():
    rounds = int(os.environ.get("ROUNDS", "3"))
    # the most telling first (the budget may end the list); Flex compiles once per shape, so only with S = 100
    cases = [(1, 32768, "bhsd"), (1, 131072, "bhsd"), (4, 32768, "bhsd"), (1, 131072, "pad"), (1, 131072, "bshd"),
             (2, 65536, "bhsd"), (1, 32768, "bshd"), (1, 32768, "pad"), (4, 32768, "bshd")]
    for s in (100, 0):
        for b, n, layout in cases:
            if log.out_of_time():
                return
            q, k, v = inputs(b, n, layout)
            pairs = b * visible_pairs(n, n, W, s)
            fns = {be: forward(be, q, k, v, s) for be in ("triton", "triton-tl") + (("flex",) if s else ())}
            got = interleaved(list(fns), lambda be, first: (timeit(fns[be]), None), rounds)
            for be, r in got.items():
                if isinstance(r, Exception):
                    log.rec(kind="fwd", batch=b, n=n, layout=layout, keep_first=s, backend=be, error=repr(r)[:300])
                    continue
                ms, _, per_round = r
                log.rec(kind="fwd", batch=b, n=n, layout=layout, keep_first=s, backend=be, ms=round(ms, 3),
                        rounds_ms=[round(x, 3) for x in per_round], tflops=round(4 * pairs * D * HQ / ms / 1e9, 1),
                        kernels_ms=kernel_times(fns[be], reps=3))
            q = k = v = fns = None
            torch.cuda.empty_cache()
    T._GLUON_FWD = None


def _grads(q, k, v, do, w, s, dqk, cfg=None, preamble=True, cu=None):
    T._GLUON_DQK, T._DQ_PREAMBLE = dqk, preamble
    if cfg:
        T._GLUON_DQK_CFG = cfg
    if cu is None:
        out = swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend="triton")
    else:
        out = T.swaa_attention_varlen(q, k, v, cu, cu, int((cu[1:] - cu[:-1]).max()), int((cu[1:] - cu[:-1]).max()),
                                      sliding_window_size=w, keep_first=s)
    g = torch.autograd.grad(out, (q, k, v), do)
    torch.cuda.synchronize()
    return g, T.LAST_DQ_GLUON


def dq_check() -> bool:
    from swaa.attention import attention_ref
    ok = True
    cases = [(130, 4, 2, 128, 64, 129), (1000, 8, 2, 128, 256, 100), (777, 6, 2, 128, 1, 300), (3000, 9, 3, 64, 512, 4),
             (4096, 32, 8, 128, 2048, 100), (1, 4, 4, 128, 8, 2), (2500, 8, 8, 128, None, 0), (63, 4, 1, 64, 16, 0)]
    for n, hq, hkv, d, w, s in cases:
        mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = mk(hq), mk(hkv), mk(hkv)
        do = torch.randn_like(q)
        leaf = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
        ref = torch.autograd.grad(attention_ref(*leaf, sliding_window_size=w, keep_first=s), leaf, do.float())
        base, _ = _grads(q, k, v, do, w, s, False)
        for preamble in (True, False):
            got, ran = _grads(q, k, v, do, w, s, True, (64, 3, 3), preamble)
            r_def = [rel(a, b) for a, b in zip(got, base)]
            r_ref = [rel(a, b) for a, b in zip(got, ref)]
            good = ran and max(r_def) < 2e-2 and max(r_ref) < 3e-2
            ok &= good
            log.rec(kind="dq-check", n=n, hq=hq, hkv=hkv, d=d, window=w, keep_first=s, preamble=preamble, ran=ran,
                    rel_vs_default=r_def, rel_vs_ref=r_ref, ok=good)
    # packed sequences of other lengths than their neighbours
    lens = [1000, 37, 4096]
    cu = torch.tensor([0, 1000, 1037, 5133], dtype=torch.int32, device="cuda")
    mk = lambda h: torch.randn(5133, h, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = mk(12), mk(4), mk(4)
    do = torch.randn_like(q)
    base, _ = _grads(q, k, v, do, 256, 70, False, cu=cu)
    got, ran = _grads(q, k, v, do, 256, 70, True, (64, 3, 3), cu=cu)
    r_def = [rel(a, b) for a, b in zip(got, base)]
    good = ran and max(r_def) < 2e-2
    ok &= good
    log.rec(kind="dq-check", varlen=lens, window=256, keep_first=70, ran=ran, rel_vs_default=r_def, ok=good)
    T._GLUON_DQK, T._DQ_PREAMBLE, T._GLUON_DQK_CFG = False, True, (64, 3, 3)
    print("DQ CHECK", "ALL OK" if ok else "FAILED", flush=True)
    return ok


def dq_time():
    cfgs = [tuple(int(x) for x in c.split(",")) for c in os.environ.get("DQK_CFGS", "64,3,3;64,4,4;64,2,2;128,2,2")
            .split(";")]
    rounds = int(os.environ.get("ROUNDS", "3"))
    variants = ["default"] + [f"dqk{c[0]}-{c[1]}-{c[2]}" for c in cfgs]

    def use(variant):
        T._GLUON_DQK = variant != "default"
        if T._GLUON_DQK:
            T._GLUON_DQK_CFG = cfgs[variants.index(variant) - 1]
    for n, s in [(32768, 100), (32768, 0), (131072, 100)]:
        if log.out_of_time():
            break
        mk = lambda h: torch.randn(1, h, n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        q, k, v = mk(HQ), mk(HKV), mk(HKV)
        do = torch.randn_like(q)
        pairs = visible_pairs(n, n, W, s)
        fn = fwdbwd(q, k, v, do, W, s, "triton")       # which dQ kernel it runs: use(variant) before each call

        def run(variant, first):
            use(variant)
            return timeit(fn), None
        got = interleaved(variants, run, rounds)
        for variant, r in got.items():
            if isinstance(r, Exception):
                log.rec(kind="fwdbwd", n=n, keep_first=s, variant=variant, error=repr(r)[:300])
                continue
            use(variant)
            ms, _, per_round = r
            log.rec(kind="fwdbwd", n=n, keep_first=s, variant=variant, ms=round(ms, 3),
                    rounds_ms=[round(x, 3) for x in per_round], tflops=round(10 * pairs * D * HQ / ms / 1e9, 1),
                    kernels_ms=kernel_times(fn, reps=3))
        q = k = v = do = None
        torch.cuda.empty_cache()
    T._GLUON_DQK = False


def utilization_trace():
    """nvidia-smi's SM and memory-controller utilisation every 20 ms while each length's forward runs ~2 s."""
    marks = []
    with SmiTrace(os.path.join(OUT, "util_trace.csv"),
                  ["utilization.gpu", "utilization.memory", "clocks.sm", "power.draw"]) as trace:
        for n in (32768, 131072, 32768):
            q, k, v = inputs(1, n, "bhsd")
            fn = forward("triton", q, k, v, 100)
            ms = timeit(fn)
            reps = max(1, int(2000 / ms))
            time.sleep(0.5)
            t0 = time.time()
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
            marks.append((n, t0, time.time(), ms))
            q = k = v = None
            torch.cuda.empty_cache()
    for n, t0, t1, ms in marks:
        inside = trace.samples(t0 + 0.1, t1)
        med = lambda i: statistics.median(x[i] for x in inside) if inside else None
        log.rec(kind="util", n=n, ms_per_call=round(ms, 3), samples=len(inside), sm_util_pct=med(1),
                mem_util_pct=med(2), sm_mhz=med(3), power_w=med(4))


def one_launch():
    """PART=one (under ncu): a few forwards of length $N, the profiled one last."""
    q, k, v = inputs(1, int(os.environ["N"]), "bhsd")
    fn = forward("triton", q, k, v, 100)
    for _ in range(4):
        fn()
    torch.cuda.synchronize()


def ncu_profiles():
    ncu = shutil.which("ncu") or next((p for p in ("/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/ncu")
                                       if os.path.exists(p)), None)
    if ncu is None:
        log.rec(kind="ncu", available=False)
        return
    for n in (32768, 131072):
        csv = os.path.join(OUT, f"ncu_fwd_{n // 1024}k.csv")
        cmd = [ncu, "--csv", "--kernel-name", "regex:_fwd_gluon", "--launch-skip", "3", "--launch-count", "1",
               "--section", "SpeedOfLight", "--section", "MemoryWorkloadAnalysis", "--section", "SchedulerStats",
               "--section", "WarpStateStats", "--section", "LaunchStats", sys.executable, os.path.abspath(__file__)]
        env = dict(os.environ, PART="one", N=str(n), OUT="/tmp")          # its log stays off $OUT's 8 files
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        with open(csv, "w") as f:
            f.write(r.stdout)
        log.rec(kind="ncu", available=True, n=n, rc=r.returncode, seconds=round(time.time() - t0, 1),
                stderr_tail=r.stderr[-600:], csv_lines=r.stdout.count("\n"))


if PART == "one":
    one_launch()
    sys.exit(0)
if PART in ("dq", "all") and dq_check():
    dq_time()
if PART in ("mem", "all"):
    mem()
if PART in ("prof", "all"):
    utilization_trace()
    ncu_profiles()
