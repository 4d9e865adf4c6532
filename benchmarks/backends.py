"""Time the registered attention backends on identical inputs, to justify what `backend="auto"` picks.

    python benchmarks/backends.py                 # CPU: small sizes; CUDA: 4k-32k
Writes benchmarks/results/backends_<device>.json (device name, versions, medians in ms). Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import device_ms  # noqa: E402
from swaa.attention import swaa_attention  # noqa: E402
from swaa.attention.masks import visible_pairs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        shapes = [(32, 8, 128, n) for n in (4096, 16384, 32768)]
        dtype = torch.bfloat16
        backends = ["sdpa", "flex"]
    else:
        shapes = [(9, 3, 64, n) for n in (512, 2048)]
        dtype = torch.float32
        backends = ["sdpa", "flex", "reference"]
    rows = []
    for hq, hkv, d, n in shapes:
        q = torch.randn(1, hq, n, d, device=device, dtype=dtype)
        k = torch.randn(1, hkv, n, d, device=device, dtype=dtype)
        v = torch.randn_like(k)
        for w, s in ((None, 0), (2048 if n > 2048 else 256, 100 if n > 2048 else 4)):
            for be in backends:
                if be == "reference" and n > 2048:
                    continue
                with torch.no_grad():
                    ms = device_ms(lambda: swaa_attention(q, k, v, sliding_window_size=w, keep_first=s, backend=be))
                pairs = visible_pairs(n, n, w, s)
                rows.append(dict(backend=be, heads=hq, kv_heads=hkv, head_dim=d, n=n, window=w, keep_first=s,
                                 median_ms=round(ms, 3), tflops=round(4 * pairs * d * hq / ms / 1e9, 1)))
                print(rows[-1], flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    res = dict(benchmark="backends", device=name, torch=torch.__version__, dtype=str(dtype),
               note="forward only; median ms from benchmarks/timing.py device_ms; TFLOP/s counts only the (query, key) "
                    "pairs the mask keeps", rows=rows)
    out = Path(a.out or f"benchmarks/results/backends_{'cuda' if device == 'cuda' else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
