"""Runs real vLLM (CPU) in its own process for tests/integration/test_vllm.py: one engine per (model, config),
greedy tokens + prompt log-probabilities for a batch of prompts (twice: the second pass hits the prefix
cache), chunked prefill forced by a small token budget, and the KV blocks one long request holds per step.

usage: python tests/integration/vllm_job.py JOB.json OUT.json
"""
import gc
import json
import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"          # in-process engine: block accounting is readable

from swaa.integrations.vllm.offline import generate, kv_blocks_trace, make_llm, prepare_cpu_env  # noqa: E402

prepare_cpu_env()


def main(job_path, out_path):
    job = json.load(open(job_path))
    results = json.load(open(out_path)) if os.path.exists(out_path) else {}
    for run in job["runs"]:
        if run["name"] in results:
            continue
        llm = make_llm(run["model"], run["swaa_config"], hf_overrides=run.get("hf_overrides"), dtype="float32",
                       enforce_eager=True, seed=0,
                       max_model_len=job["max_model_len"], block_size=job["block_size"],
                       max_num_batched_tokens=job["max_num_batched_tokens"], enable_prefix_caching=True)
        first = generate(llm, job["prompts"], max_tokens=job["max_tokens"], ignore_eos=True)
        again = generate(llm, job["prompts"], max_tokens=job["max_tokens"], ignore_eos=True)
        row = {"first": first, "again": again}
        if run.get("trace"):
            row["kv_blocks"] = kv_blocks_trace(llm, job["trace_prompt"], job["trace_tokens"])
        results[run["name"]] = row
        json.dump(results, open(out_path, "w"))
        del llm
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
