"""Time our kernels under alternative entries of swaa/attention/triton/tuning.py's tables, in one process.

    python benchmarks/tuning.py --mode fwdbwd --shape smollm2 --n 8192,32768 --sinks 100,0 \\
        --variant "default=" --variant "gluon-dq-64=GLUON[dq]={(9, 0): (64, 128)}"
    python benchmarks/tuning.py --mode decode --batch 1,8 --n 131072 \\
        --variant "one-pass=DECODE_ONE_PASS=(128, 8, 3, 4096)" --variant "split=DECODE_ONE_PASS=(128, 8, 3, 0)"

A variant is ``name=ASSIGNMENT[;ASSIGNMENT...]``, each assignment ``TABLE=literal`` or ``TABLE[key]=literal`` on the
tuning module (``default=`` keeps the tables as they are). Each case's variants are timed in interleaved rounds
(benchmarks/timing.py: device time, call time, and the profiler's per-kernel times); every variant's output is
checked against the first variant's. Writes JSON (device, versions, rows) as it goes. This is how the tables'
entries are chosen (docs/kernels.md); not a test.
"""
from __future__ import annotations

import argparse
import ast
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import call_ms, device_ms, interleaved, kernel_times, warm_up  # noqa: E402
from swaa.attention import swaa_attention  # noqa: E402
from swaa.attention.triton import tuning  # noqa: E402

SHAPES = {"qwen3-4b": (32, 8, 128), "smollm2": (9, 3, 64)}


def parse_variant(text: str):
    """``name=TABLE=literal;TABLE[key]=literal`` -> (name, [(table, key or None, value)])."""
    name, _, body = text.partition("=")
    sets = []
    for part in filter(None, (p.strip() for p in body.split(";"))):
        lhs, _, rhs = part.partition("=")
        table, _, key = lhs.strip().partition("[")
        if not hasattr(tuning, table):
            raise SystemExit(f"--variant {text!r}: tuning has no table {table!r}")
        sets.append((table, key.rstrip("]").strip() or None, ast.literal_eval(rhs.strip())))
    return name, sets


def apply(sets, saved):
    """Restore the tables from ``saved``, then apply ``sets``."""
    for table, value in saved.items():
        setattr(tuning, table, value)
    for table, key, value in sets:
        if key is None:
            setattr(tuning, table, value)
        else:
            getattr(tuning, table)[key] = value


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["fwd", "fwdbwd", "decode"], default="fwdbwd")
    ap.add_argument("--shape", choices=list(SHAPES), default="qwen3-4b")
    ap.add_argument("--n", default="32768", help="comma list of sequence (or cache) lengths")
    ap.add_argument("--batch", default="1", help="comma list of batch sizes")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--sinks", default="100", help="comma list of sink counts")
    ap.add_argument("--variant", action="append", required=True, help="name=TABLE=literal[;...] (see the docstring)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="tuning.json")
    a = ap.parse_args(argv)
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    import copy

    import triton
    variants = dict(parse_variant(v) for v in a.variant)
    saved = {t: copy.deepcopy(getattr(tuning, t)) for sets in variants.values() for t, _, _ in sets}
    hq, hkv, d = SHAPES[a.shape]
    res = dict(benchmark="tuning", device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=triton.__version__, python=platform.python_version(), mode=a.mode, shape=a.shape,
               variants=a.variant, rows=[])
    out = Path(a.out)
    warm_up()
    for n in map(int, a.n.split(",")):
        for b in map(int, a.batch.split(",")):
            for s in map(int, a.sinks.split(",")):
                lq = 1 if a.mode == "decode" else n
                grad = a.mode == "fwdbwd"
                mk = lambda h, l: torch.randn(b, h, l, d, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
                q, k, v = mk(hq, lq), mk(hkv, n), mk(hkv, n)
                do = torch.randn_like(q)
                fwd = lambda: swaa_attention(q, k, v, sliding_window_size=a.window, keep_first=s, backend="triton")
                fn = (lambda: torch.autograd.grad(fwd(), (q, k, v), do)) if grad else fwd
                outputs = {}

                def run(name, first):
                    apply(variants[name], saved)
                    with torch.set_grad_enabled(grad):
                        if first:
                            outputs[name] = [t.float() for t in (fn() if grad else (fn(),))]
                        return device_ms(fn), (call_ms(fn, reps=20 if grad else 100),
                                               kernel_times(fn, reps=5))
                got = interleaved(list(variants), run, a.rounds)
                ref = outputs.get(next(iter(variants)))
                for name, r in got.items():
                    row = dict(n=n, batch=b, window=a.window, keep_first=s, variant=name)
                    if isinstance(r, Exception):
                        row["error"] = str(r).splitlines()[0][:300]
                    else:
                        ms, (c_ms, kernels), rounds = r
                        err = max(((x - y).abs().max() / y.abs().max().clamp_min(1e-3)).item()
                                  for x, y in zip(outputs[name], ref)) if ref else None
                        row.update(median_ms=round(ms, 4), call_ms=round(c_ms, 4), rounds_ms=[round(x, 4) for x in rounds],
                                   kernels_ms=kernels, rel_diff_vs_first=err)
                    res["rows"].append(row)
                    print(row, flush=True)
                    out.write_text(json.dumps(res, indent=1) + "\n")
                apply([], saved)


if __name__ == "__main__":
    main()
