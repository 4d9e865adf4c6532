"""Decode benchmark: KV-cache bytes and decode speed against prompt length, for full attention, SWA + sinks
without eviction, and SWA + sinks with eviction (SinkWindowCache).

    python benchmarks/decode.py                       # CPU: the default model, 1k-8k
    python benchmarks/decode.py --gpu                 # GPU: a random-weight Qwen3-4B-shaped model, 4k-128k

Writes benchmarks/results/decode_<cpu|gpu>.json (device, versions, medians) and a figure next to it. Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import sync  # noqa: E402
from swaa import SWAAConfig, apply_swaa  # noqa: E402


def kv_bytes(cache) -> int:
    return sum(l.keys.numel() * l.keys.element_size() * 2 for l in cache.layers if l.keys is not None)


@torch.no_grad()
def run(model, ids, cfg, evict, new_tokens):
    apply_swaa(model, cfg, kv_eviction=evict)
    cache = DynamicCache(config=model.config)
    sync()
    t0 = time.perf_counter()
    out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    sync()
    ttft = time.perf_counter() - t0
    cache = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    peak = kv_bytes(cache)
    steps = []
    for _ in range(new_tokens):
        t = time.perf_counter()
        out = model(tok, past_key_values=cache, use_cache=True)
        sync()
        steps.append(time.perf_counter() - t)
        tok = out.logits[:, -1:].argmax(-1)
        peak = max(peak, kv_bytes(cache))
    step = statistics.median(steps[2:] if len(steps) > 4 else steps)
    return dict(ttft_s=round(ttft, 3), decode_step_ms=round(step * 1e3, 2), decode_tok_s=round(1 / step, 1),
                peak_kv_bytes=peak, final_kv_bytes=kv_bytes(cache), tokens_seen=cache.get_seq_length())


def random_qwen3_4b(device):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                      rope_theta=1e6, tie_word_embeddings=True)
    with torch.device(device):
        model = Qwen3ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    return model.eval()


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in dict.fromkeys(r["config"] for r in res["rows"]):
        rows = sorted((r for r in res["rows"] if r["config"] == label), key=lambda r: r["prompt"])
        x = [r["prompt"] for r in rows]
        axes[0].plot(x, [r["peak_kv_bytes"] / 2**20 for r in rows], marker="o", label=label)
        axes[1].plot(x, [r["decode_step_ms"] for r in rows], marker="o", label=label)
    for ax, yl in zip(axes, ("peak KV cache (MiB)", "decode step (ms, median)")):
        ax.set(xscale="log", xlabel="prompt tokens", ylabel=yl)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{res['model']} on {res['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--lengths", default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.gpu:
        dev = torch.device("cuda")
        model = random_qwen3_4b(dev)
        name, lengths, w, s = "random-weight Qwen3-4B shape", [4096, 16384, 65536, 131072], 2048, 100
        new = a.new_tokens or 32
        device_name = torch.cuda.get_device_name()
    else:
        from swaa import load_model
        dev = torch.device("cpu")
        model, _ = load_model()
        name, lengths, w, s = "SmolLM2-135M-Instruct", [1024, 2048, 4096, 8000], 256, 4
        new = a.new_tokens or 24
        device_name = platform.processor() or platform.machine()
    if a.lengths:
        lengths = [int(x) for x in a.lengths.split(",")]
    configs = [("full attention", SWAAConfig(), False),
               (f"SWA W={w} S={s}, no eviction", SWAAConfig(sliding_window_size=w, keep_first=s), False),
               (f"SWA W={w} S={s}, eviction", SWAAConfig(sliding_window_size=w, keep_first=s), True)]
    g = torch.Generator().manual_seed(0)
    out = Path(a.out or f"benchmarks/results/decode_{'gpu' if a.gpu else 'cpu'}.json")
    res = dict(benchmark="decode", model=name, device=device_name, torch=torch.__version__,
               threads=torch.get_num_threads(), new_tokens=new, window=w, keep_first=s,
               note="peak KV = bytes of keys+values stored by the cache (max over steps); decode step = median of "
                    "the timed steps; batch 1, greedy", rows=[])
    for n in lengths:
        ids = torch.randint(100, 20000, (1, n), generator=g).to(dev)
        for label, cfg, evict in configs:
            row = dict(config=label, prompt=n, **run(model, ids, cfg, evict, new))
            res["rows"].append(row)
            print(row, flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
