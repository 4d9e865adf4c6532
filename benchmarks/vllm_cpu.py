"""vLLM on CPU with and without the SWAA plugin: start-up time, prefill and decode throughput, KV blocks held.

    python benchmarks/vllm_cpu.py [--prompts 8 --prompt-len 1024 --new 64 --out benchmarks/results/vllm_cpu.json]

One engine per setting, each in this process one after the other (in-process engine core), same prompts, greedy.
Prefill throughput is timed with max_tokens=1, decode throughput from the extra time of ``--new`` tokens.
Not a test: it writes JSON (device, versions, medians of ``--reps``) and prints a table.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

from swaa.integrations.vllm.offline import kv_blocks_trace, make_llm, prepare_cpu_env  # noqa: E402

prepare_cpu_env()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=1024)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/vllm_cpu.json")
    a = ap.parse_args()
    import torch
    import vllm
    from vllm import SamplingParams

    from swaa import SWAAConfig
    from swaa.evaluation.data import offline_token_ids
    from swaa.models import default_model_path
    path = str(default_model_path())
    from transformers import AutoTokenizer
    ids = offline_token_ids(AutoTokenizer.from_pretrained(path), a.prompt_len * a.prompts + 10, "gpl3").view(-1).tolist()
    prompts = [{"prompt_token_ids": ids[i * a.prompt_len:(i + 1) * a.prompt_len]} for i in range(a.prompts)]
    settings = {"plain vLLM": None, "swaa full (plugin, no window)": SWAAConfig(),
                "swa=256 sink=4": SWAAConfig(sliding_window_size=256, keep_first=4),
                "swa=256 sink=4 fadec": SWAAConfig(sliding_window_size=256, keep_first=4, force_fa_decode=True),
                "swa=256 sink=4 half layers full": SWAAConfig(sliding_window_size=256, keep_first=4,
                                                               non_sliding_layers="SF" * 15)}
    rows = []
    for name, cfg in settings.items():
        t0 = time.perf_counter()
        llm = make_llm(path, cfg, dtype="bfloat16", seed=0, max_model_len=a.prompt_len + a.new + 16, block_size=32,
                       enable_prefix_caching=False)        # repeated prompts must be computed each time
        startup = time.perf_counter() - t0
        one, full = SamplingParams(max_tokens=1, temperature=0), SamplingParams(max_tokens=a.new, temperature=0,
                                                                                ignore_eos=True)
        llm.generate(prompts[:1], one, use_tqdm=False)                              # warm-up
        pre, tot = [], []
        for _ in range(a.reps):
            t = time.perf_counter(); llm.generate(prompts, one, use_tqdm=False); pre.append(time.perf_counter() - t)
            t = time.perf_counter(); llm.generate(prompts, full, use_tqdm=False); tot.append(time.perf_counter() - t)
        p, g = statistics.median(pre), statistics.median(tot)
        blocks = kv_blocks_trace(llm, prompts[0]["prompt_token_ids"], 16)
        row = dict(setting=name, swaa_config=None if cfg is None else cfg.to_dict(), startup_s=round(startup, 1),
                   prefill_tok_s=round(a.prompts * a.prompt_len / p, 1),
                   decode_tok_s=round(a.prompts * (a.new - 1) / max(g - p, 1e-9), 1),
                   kv_blocks_after_decode=blocks[-2] if len(blocks) > 1 else blocks[-1])
        rows.append(row)
        print(row, flush=True)
        del llm
        gc.collect()
    base = rows[0]
    for r in rows:
        r["prefill_vs_plain"] = round(r["prefill_tok_s"] / base["prefill_tok_s"], 3)
        r["decode_vs_plain"] = round(r["decode_tok_s"] / base["decode_tok_s"], 3)
    out = dict(device=f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               torch=torch.__version__, vllm=vllm.__version__, dtype="bfloat16", prompts=a.prompts,
               prompt_len=a.prompt_len, new_tokens=a.new, reps=a.reps, block_size=32, rows=rows)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(out, open(a.out, "w"), indent=1)
    print(f"{'setting':34s} {'start s':>8s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'KV blocks':>9s}")
    for r in rows:
        print(f"{r['setting']:34s} {r['startup_s']:8.1f} {r['prefill_tok_s']:14.1f} {r['decode_tok_s']:13.1f} "
              f"{r['kv_blocks_after_decode']:9d}")


if __name__ == "__main__":
    main()
