"""Attention kernel benchmark: SDPA full causal (the full-attention baseline), FlexAttention (the same sink + window
mask, compiled, analytic BlockMask; and on FlashAttention-4's kernels where they are installed), and our Triton
kernels, on identical inputs in one process.

    python benchmarks/attention.py --out benchmarks/results/attention_gpu_h200.json     # the grid (GPU)
    python benchmarks/attention.py --quick                                             # 32k only, Qwen3-4B shape
    python benchmarks/attention.py --table benchmarks/results/attention_gpu_h200.json  # markdown tables (docs)

Forward, forward+backward, and decode (one query per sequence against 32k / 128k caches, batch 1 and 8). Every row
has ``median_ms`` (device time: reps back to back) and ``call_ms`` (one call after an L2 flush, the host's cost
included): benchmarks/timing.py says how each is taken. Also effective TFLOP/s counting only the (query, key) pairs
the mask keeps, and for decode the GB/s of the K/V bytes the mask needs against the card's copy bandwidth. Writes
JSON as it goes (device, versions). Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import call_ms, copy_bandwidth, device_ms, interleaved, warm_up  # noqa: E402
from swaa.attention import swaa_attention  # noqa: E402
from swaa.attention.masks import visible_pairs  # noqa: E402

SHAPES = {"qwen3-4b": (32, 8, 128), "smollm2": (9, 3, 64)}
DECODE_BACKENDS = ["triton", "auto", "sdpa", "triton:one-pass", "triton:split"]


def _callable(backend, q, k, v, w, s):
    kw = dict(sliding_window_size=w, keep_first=s)
    if backend == "sdpa-full":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] == k.shape[2],
                                                      enable_gqa=q.shape[1] != k.shape[1])
    if backend == "flex-flash":
        from benchmarks import flex_flash
        return flex_flash.runner(q, k, v, w, s)
    if backend.startswith("triton:"):
        from swaa.attention.triton import triton_decode
        one = backend == "triton:one-pass"
        return lambda: triton_decode(q, k, v, window=w, keep_first=s, one_pass=one)
    return lambda: swaa_attention(q, k, v, backend=backend, **kw)


def run_case(backend, mode, q, k, v, w, s, with_call=True):
    """(device ms, call ms or None) of ``backend`` on these inputs: forward, forward+backward or decode."""
    fwd = _callable(backend, q, k, v, w, s)
    if mode == "fwdbwd":
        do = torch.randn_like(q)
        fn = lambda: torch.autograd.grad(fwd(), (q, k, v), do)
        return device_ms(fn), (call_ms(fn, warmup=3, reps=10) if with_call else None)
    with torch.no_grad():
        return device_ms(fwd), (call_ms(fwd) if with_call else None)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", default=None, help="comma list of " + ",".join(SHAPES))
    ap.add_argument("--lengths", default=None, help="comma list, e.g. 8192,32768,131072")
    ap.add_argument("--modes", default="fwd,fwdbwd,decode")
    ap.add_argument("--backends", default="sdpa-full,flex,triton,flex-flash")
    ap.add_argument("--out", default=None)
    ap.add_argument("--windows", default=None, help="comma list of W:S for prefill, e.g. 2048:100 (default: "
                    "2048 and 4096 with 0 and 100 sinks)")
    ap.add_argument("--fwdbwd-max", type=int, default=32768, help="longest sequence timed forward+backward")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (median over them)")
    ap.add_argument("--table", default=None, help="print the markdown tables of a results file and exit")
    a = ap.parse_args(argv)
    if a.table:
        print(tables(json.loads(Path(a.table).read_text())))
        return
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    shapes = (a.shapes or ("qwen3-4b" if a.quick else "qwen3-4b,smollm2")).split(",")
    lengths = [int(x) for x in (a.lengths or ("32768" if a.quick else "8192,32768,131072")).split(",")]
    modes = a.modes.split(",")
    backends = a.backends.split(",")
    flash_why, flash_versions = "not asked for", None
    if "flex-flash" in backends:
        from benchmarks import flex_flash
        flash_why, flash_versions = flex_flash.why_not(), flex_flash.versions()
    if flash_why:
        backends = [b for b in backends if b != "flex-flash"]
    windows = [(2048, 100)] if a.quick else [(2048, 0), (2048, 100), (4096, 0), (4096, 100)]
    if a.windows:
        windows = [tuple(int(x) for x in ws.split(":")) for ws in a.windows.split(",")]
    dtype = torch.bfloat16
    rows = []
    warm_up()
    bw = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}: copy bandwidth {bw:.0f} GB/s; flex-flash: {flash_why or 'ok'}")

    import triton
    out = Path(a.out or "benchmarks/results/attention_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    res = dict(benchmark="attention", device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__, python=platform.python_version(), dtype="bfloat16",
               copy_bandwidth_gbps=round(bw, 1), rounds=a.rounds, flex_flash=flash_why or "measured",
               flex_flash_versions=flash_versions,
               note="median_ms: device time, the median over `rounds` interleaved rounds (rounds_ms) of medians of "
                    "10 reps back to back; call_ms: the median of one call after an L2 flush (first round; 100 "
                    "calls, 10 for forward+backward), host cost included (benchmarks/timing.py). TFLOP/s from "
                    "median_ms count only visible pairs (fwd 4*pairs*D*H, fwd+bwd 10*pairs*D*H); decode GB/s = "
                    "K/V bytes the mask needs / median_ms", rows=rows)

    def record(**r):
        rows.append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")          # as it goes: a cut run keeps its rows

    def record_interleaved(got, key, digits, derived):
        for be, res_be in got.items():
            if isinstance(res_be, Exception):
                record(**key, backend=be, error=str(res_be).splitlines()[0][:200])
                continue
            ms, ms1, per_round = res_be
            record(**key, backend=be, median_ms=round(ms, digits), call_ms=round(ms1, digits), **derived(ms),
                   rounds_ms=[round(x, digits) for x in per_round])

    for shape in shapes:
        hq, hkv, d = SHAPES[shape]
        for n in lengths:
            mk = lambda h: torch.randn(1, h, n, d, device="cuda", dtype=dtype, requires_grad=True)
            q, k, v = mk(hq), mk(hkv), mk(hkv)
            for mode in [m for m in modes if m != "decode"]:
                if mode == "fwdbwd" and n > a.fwdbwd_max:
                    continue
                mult = 4 if mode == "fwd" else 10        # fwd: 2 matmuls; fwd+bwd: 2 + 5 (dq, dk, dv, dp, recompute)
                if "sdpa-full" in backends:
                    ms, ms1 = run_case("sdpa-full", mode, q, k, v, None, 0)
                    record(shape=shape, mode=mode, n=n, batch=1, backend="sdpa-full", window=None, keep_first=0,
                           median_ms=round(ms, 3), call_ms=round(ms1, 3),
                           tflops=round(mult * visible_pairs(n, n, None, 0) * d * hq / ms / 1e9, 1))
                for w, s in windows:
                    pairs = visible_pairs(n, n, w, s)
                    got = interleaved([b for b in backends if b != "sdpa-full"],
                                      lambda be, first: run_case(be, mode, q, k, v, w, s, first), a.rounds)
                    record_interleaved(got, dict(shape=shape, mode=mode, n=n, batch=1, window=w, keep_first=s), 3,
                                       lambda ms: dict(tflops=round(mult * pairs * d * hq / ms / 1e9, 1)))
            del q, k, v
        if "decode" in modes and shape == "qwen3-4b":
            for n in ([32768] if a.quick else [32768, 131072]):
                for batch in (1, 8):
                    k = torch.randn(batch, hkv, n, d, device="cuda", dtype=dtype)
                    v = torch.randn_like(k)
                    q = torch.randn(batch, hq, 1, d, device="cuda", dtype=dtype)
                    for w, s in [(None, 0), (2048, 100), (2048, 0)]:
                        keys = n if w is None else min(n, w + s)
                        kv_bytes = 2 * batch * keys * hkv * d * 2
                        got = interleaved(DECODE_BACKENDS,
                                          lambda be, first: run_case(be, "decode", q, k, v, w, s, first), a.rounds)
                        record_interleaved(got, dict(shape=shape, mode="decode", n=n, batch=batch, window=w,
                                                     keep_first=s), 4,
                                           lambda ms: dict(kv_gbps=round(kv_bytes / ms / 1e6, 1),
                                                           frac_of_copy_bw=round(kv_bytes / ms / 1e6 / bw, 3)))
                    del q, k, v
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


def tables(res: dict) -> str:
    """The results file as markdown: prefill (ours / Flex per case), decode (call and device time per backend), and
    Flex on FlashAttention-4 beside ours and Flex (the rows of the run that had it installed)."""
    key = lambda r: (r["shape"], r["mode"], r["n"], r.get("batch", 1), r["window"], r["keep_first"])
    main, fa4 = {}, {}
    for r in res["rows"]:
        if "median_ms" in r:
            (fa4 if r.get("run") == "flashattention4" else main).setdefault(key(r), {})[r["backend"]] = r
    cell = lambda r: f"{r['median_ms']:.3f} ({r['call_ms']:.3f})" if r else "-"
    out = [f"{res['device']}, torch {res['torch']}, Triton {res['triton']}, bf16; ms = device time (call time)", "",
           "| shape | mode | tokens | W | S | ours | Flex | ours / Flex |", "|" + "---|" * 8]
    for (shape, mode, n, batch, w, s), by in main.items():
        if mode == "decode" or "triton" not in by:
            continue
        t, f = by["triton"], by.get("flex")
        ratio = f"{f['median_ms'] / t['median_ms']:.2f}x" if f else "-"
        out.append(f"| {shape} | {mode} | {n // 1024}k | {w} | {s} | {cell(t)} | {cell(f)} | {ratio} |")
    out += ["", "| cache | batch | W | S | " + " | ".join(DECODE_BACKENDS) + " |",
            "|" + "---|" * (4 + len(DECODE_BACKENDS))]
    for (shape, mode, n, batch, w, s), by in main.items():
        if mode != "decode":
            continue
        cells = [f"{by[b]['call_ms'] * 1e3:.0f} ({by[b]['median_ms'] * 1e3:.0f})" if b in by else "-"
                 for b in DECODE_BACKENDS]
        out.append(f"| {n // 1024}k | {batch} | {w} | {s} | " + " | ".join(cells) + " |")
    out.append("\ndecode cells: call time (device time) in microseconds")
    if fa4:
        out += ["", "| shape | mode | tokens | W | S | ours | Flex | Flex on FlashAttention-4 | FA4 / ours |",
                "|" + "---|" * 9]
        for (shape, mode, n, batch, w, s), by in fa4.items():
            t, f, ff = by.get("triton"), by.get("flex"), by.get("flex-flash")
            ratio = f"{t['median_ms'] / ff['median_ms']:.2f}x" if t and ff else "-"
            out.append(f"| {shape} | {mode} | {n // 1024}k | {w} | {s} | {cell(t)} | {cell(f)} | {cell(ff)} | {ratio} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
