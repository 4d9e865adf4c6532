"""vLLM on CPU with and without the SWAA plugin: prefill and decode throughput and KV blocks held, per setting and
prompt length, in one run.

    python benchmarks/vllm_cpu.py                                   # the record: batch 8, 1k/4k/7k prompts, 64 new
    python benchmarks/vllm_cpu.py --prompt-lens 512 --batch 2 --new 8 --out /tmp/quick.json     # a quick check
    python benchmarks/vllm_cpu.py --profile --prompt-lens 1024,7168 --settings "plain vLLM,W=256 S=4" \
        --out benchmarks/results/vllm_cpu_profile.json              # where the prefill time goes

One engine per setting (in this process, one after the other), greedy, prefix caching off, the default model in
bf16. Each (setting, prompt length) is one batch of ``--batch`` prompts driven step by step through vLLM's engine:
the steps up to the one that gives the last request its first token are the prefill (prompt tokens / their time),
the steps after it, up to the one in which the first request finishes, are pure decode of the whole batch (tokens
they produce / their time; a non-positive time is an error). KV blocks
are vLLM's own block tables, in whole-model blocks (a windowed group's block holds fewer layers), read at the last
step before the first request finishes. Ratios are against plain vLLM in the same run. Rows are written as they
finish and a rerun with the same parameters keeps them. Not a test: timings need a quiet machine, so each row
records the 1-minute load average at its start and end (``--quiet-load`` waits for a quiet machine before each row).
"""
import argparse
import gc
import json
import os
import platform
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"          # in-process engine: steps and block tables are readable

from swaa.integrations.vllm.offline import kv_blocks_held, make_llm, model_blocks, prepare_cpu_env  # noqa: E402

prepare_cpu_env(kv_cache_gib=4)                              # 8 prompts of 7k tokens need ~1.4 GiB without SWAA

SETTINGS = {
    "plain vLLM": None,
    "plugin without window": {},
    "W=256 S=4": dict(sliding_window_size=256, keep_first=4),
    "W=256 S=4 FA decode": dict(sliding_window_size=256, keep_first=4, force_fa_decode=True),
    "W=256 S=4 half layers full": dict(sliding_window_size=256, keep_first=4, non_sliding_layers="SF" * 15),
}


def _submit(llm, prompts, new_tokens: int, tag: str):
    """Queue ``prompts`` as requests ``TAG-i`` (greedy, exactly ``new_tokens`` each) in the engine, which it returns."""
    from vllm import SamplingParams
    engine = llm.llm_engine
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    for i, ids in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", {"prompt_token_ids": ids}, params)
    return engine


def run_batch(llm, prompts, new_tokens: int, tag: str) -> dict:
    """Drive one batch through the engine step by step: prefill and decode throughput, KV blocks after decode."""
    engine = _submit(llm, prompts, new_tokens, tag)
    produced = {f"{tag}-{i}": 0 for i in range(len(prompts))}
    prefill_s = decode_s = 0.0
    decode_tokens = 0
    blocks = None
    whole_batch = True                       # no request has finished yet: every step still decodes all of them
    while engine.has_unfinished_requests():
        in_prefill = min(produced.values()) == 0
        t0 = time.perf_counter()
        outs = engine.step()
        dt = time.perf_counter() - t0
        before = sum(produced.values())
        finished = False
        for o in outs:
            produced[o.request_id] = len(o.outputs[0].token_ids)
            finished |= o.finished
        if in_prefill:
            prefill_s += dt
        elif whole_batch:
            decode_s += dt
            decode_tokens += sum(produced.values()) - before
        if whole_batch and not finished and min(produced.values()) > 0:
            blocks = model_blocks(kv_blocks_held(llm))
        whole_batch &= not finished
    if decode_s <= 0 or decode_tokens <= 0:
        raise RuntimeError(f"no pure decode steps were timed ({decode_tokens} tokens in {decode_s} s): use more "
                           "--new tokens")
    return dict(prefill_tok_s=round(sum(map(len, prompts)) / prefill_s, 1),
                decode_tok_s=round(decode_tokens / decode_s, 1), kv_blocks_after_decode=round(blocks, 1),
                prefill_s=round(prefill_s, 2), decode_s=round(decode_s, 2), decode_tokens=decode_tokens)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt-lens", default="1024,4096,7168", help="comma-separated prompt lengths in tokens")
    ap.add_argument("--batch", type=int, default=8, help="prompts per batch")
    ap.add_argument("--new", type=int, default=64, help="tokens generated per prompt")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from: " + ", ".join(SETTINGS))
    ap.add_argument("--out", default="benchmarks/results/vllm_cpu.json")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the timings: the prefill of one batch per setting and prompt length under torch's "
                         "profiler, its CPU time by kind of operation (written to --out)")
    ap.add_argument("--quiet-load", type=float, default=None, metavar="LOAD",
                    help="before each row, wait until the 1-minute load average is below LOAD (a shared machine)")
    a = ap.parse_args()
    lens = [int(x) for x in a.prompt_lens.split(",")]
    names = [x.strip() for x in a.settings.split(",")]
    unknown = [x for x in names if x not in SETTINGS]
    if unknown:
        ap.error(f"--settings {','.join(unknown)}: unknown; choose from {', '.join(SETTINGS)}")

    import torch
    import vllm
    from transformers import AutoTokenizer

    from swaa.evaluation.data import offline_token_ids
    from swaa.models import default_model_path
    path = str(default_model_path())
    ids = offline_token_ids(AutoTokenizer.from_pretrained(path), max(lens) * a.batch + 10, "gpl3").view(-1).tolist()
    head = dict(device=f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                torch=torch.__version__, vllm=vllm.__version__, model=path, dtype="bfloat16", batch=a.batch,
                new_tokens=a.new, block_size=32, prefix_caching=False)
    doc = json.load(open(a.out)) if os.path.exists(a.out) else {}
    rows = doc.get("rows", []) if all(doc.get(k) == v for k, v in head.items()) else []
    done = {(r["setting"], r["prompt_len"]) for r in rows}
    for name in names:
        todo = [n for n in lens if (name, n) not in done]
        if not todo:
            continue
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        llm = make_llm(path, SETTINGS[name], dtype="bfloat16", seed=0, max_model_len=max(lens) + a.new + 16,
                       block_size=32, enable_prefix_caching=False)
        startup = round(time.perf_counter() - t0, 1)
        run_batch(llm, [ids[:256]], 4, "warm-up")
        for n in todo:
            prompts = [ids[i * n:(i + 1) * n] for i in range(a.batch)]
            if a.profile:
                rows.append(dict(setting=name, prompt_len=n, swaa_config=SETTINGS[name], **profile_prefill(llm, prompts)))
                print(json.dumps(rows[-1]), flush=True)
                _write(a.out, head, rows)
                continue
            start_load = _wait_quiet(a.quiet_load)
            timed = run_batch(llm, prompts, a.new, f"p{n}")
            row = dict(setting=name, prompt_len=n, swaa_config=SETTINGS[name], load_avg_1min=start_load,
                       load_avg_1min_end=round(os.getloadavg()[0], 2), engine_load_avg_1min=round(load, 2),
                       startup_s=startup, **timed)
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(a.out, head, rows)
        del llm
        gc.collect()
    _write(a.out, head, rows)
    if a.profile:
        return
    print(f"{'setting':28s} {'prompt':>6s} {'prefill tok/s':>13s} {'x plain':>7s} {'decode tok/s':>12s} "
          f"{'x plain':>7s} {'KV blocks':>9s} {'load':>5s}")
    for r in rows:
        print(f"{r['setting']:28s} {r['prompt_len']:6d} {r['prefill_tok_s']:13.1f} "
              f"{r.get('prefill_vs_plain', 0):7.2f} {r['decode_tok_s']:12.1f} {r.get('decode_vs_plain', 0):7.2f} "
              f"{r['kv_blocks_after_decode']:9.1f} {r['load_avg_1min']:5.2f}")


KINDS = (("attention, vLLM's kernel", ("cpu_attention", "cpu_attn_reshape")),
         ("attention, SDPA", ("scaled_dot_product",)),
         ("KV gathers and writes", ("index_select", "index_copy", "index_put", "gather", "scatter")),
         ("matrix products", ("onednn_mm", "aten::mm", "aten::addmm", "aten::bmm")),
         ("compiled elementwise (norms, rotary, activations)", ("CompiledFxGraph",)))


def profile_prefill(llm, prompts) -> dict:
    """Self CPU time of the prefill steps (``max_tokens=1``) by kind of operation, in ms and shares."""
    from torch.profiler import ProfilerActivity, profile
    engine = _submit(llm, prompts, 1, "prof")
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        while engine.has_unfinished_requests():
            engine.step()
    wall = time.perf_counter() - t0
    by_kind = {k: 0.0 for k, _ in KINDS} | {"other ops": 0.0}
    top = []
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3
        kind = next((k for k, keys in KINDS if any(x in e.key for x in keys)), "other ops")
        by_kind[kind] += ms
        top.append((ms, e.key))
    total = sum(by_kind.values())
    return dict(wall_s=round(wall, 2), profiled_ms=round(total, 1),
                share={k: round(v / total, 3) for k, v in by_kind.items()},
                top_ops=[dict(op=k, ms=round(ms, 1)) for ms, k in sorted(top, reverse=True)[:12]])


def _wait_quiet(limit: float | None) -> float:
    """The 1-minute load average, once it is below ``limit`` (None: now)."""
    while limit is not None and os.getloadavg()[0] >= limit:
        time.sleep(30)
    return round(os.getloadavg()[0], 2)


def _write(path, head, rows):
    plain = {r["prompt_len"]: r for r in rows if r["setting"] == "plain vLLM"}
    for r in rows:
        base = plain.get(r["prompt_len"])
        if base is not None and "prefill_tok_s" in r:
            r["prefill_vs_plain"] = round(r["prefill_tok_s"] / base["prefill_tok_s"], 3)
            r["decode_vs_plain"] = round(r["decode_tok_s"] / base["decode_tok_s"], 3)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(head, rows=rows), f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
