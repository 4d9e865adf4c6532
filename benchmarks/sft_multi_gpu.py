"""LoRA SFT on the two GPUs of one host, DDP and FSDP2 (configs/accelerate/{ddp,fsdp}.yaml), against a CPU reference.

    python benchmarks/sft_multi_gpu.py                         # 2 GPUs -> benchmarks/results/sft_fsdp_2xh200.jsonl
    python benchmarks/sft_multi_gpu.py --cpu --out /tmp/sftb   # 2 CPU processes over gloo, fp32: a check, seconds

For each config, ``swaa sft`` runs in 2 processes (``accelerate launch`` + tests/integration/sft_cli_job.py) twice:
straight through, and interrupted after the last step but one and run again (it resumes from the half-way
checkpoint). The reference is one process on the CPU in fp32 with gradient accumulation 2, which takes the same 2
batches per optimizer step; dropout draws are seeded per batch, so all runs see the same masks. One row per run:

- tokens/s: the padded batch tokens of steps 2.. (the batches' own widths, both processes) over their wall time;
- peak memory of each process (its GPU's allocations; on CPU the resident size);
- ranks_agree: the adapter as gathered whole in each process has the same digest;
- rel_err_vs_cpu: the largest relative Frobenius error, over the adapted modules, of the adapter's weight change
  B @ A against the CPU reference's; pass when <= 5e-2 on GPUs (bf16 weights and activations: 8 bits of mantissa,
  2^-9 relative per rounding, through 30 layers and every step) and <= 1e-4 with --cpu (fp32 throughout: DDP is
  exact; FSDP's shard-wise gradient norm moves the clip factor by an ulp, measured 5.3e-6 on the default model);
- rel_err_vs_full (the resumed run): the same measure against the uninterrupted run; pass when <= 1e-3 on GPUs (the
  same kernels on the same inputs; only atomics in GPU backward kernels can reorder sums) and == 0 with --cpu.

The default model (SmolLM2-135M-Instruct) on synthetic long-context prompts (needle and QA, --length tokens) under
W=256, S=4, FA decode. Rows are written at the end, keyed by the model's fingerprint, the data's and the versions.
Not a test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))                                          # run from anywhere in the checkout

from swaa.store.fingerprint import model_fingerprint                   # noqa: E402
from swaa.store.rows import atomic_write_text                          # noqa: E402

CONFIGS = ("ddp", "fsdp")
PASS = {"gpu": dict(vs_cpu=5e-2, vs_full=1e-3), "cpu": dict(vs_cpu=1e-4, vs_full=0.0)}


def _sft_args(a, data: Path) -> list[str]:
    return ["--model", a.model, "--data", str(data), "--response-column", "answer", "--swaa",
            '{"sliding_window_size": 256, "keep_first": 4, "force_fa_decode": true}', "--max-steps", str(a.steps),
            "--batch-size", str(a.batch_size), "--save-every", str(a.steps // 2), "--lr", "2e-4", "--seed", "0"]


def _env(a) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if a.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""                               # the processes run on CPU, over gloo
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(a, config: str, args: list[str], out: Path, stop: int) -> list[dict]:
    port = _free_port()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", "2", "--main_process_port",
           str(port), str(ROOT / "tests" / "integration" / "sft_cli_job.py"), str(stop), *args, "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(a))
    if res.returncode != 0:
        raise SystemExit(f"{config} run failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
    return sorted((json.loads(l) for l in res.stdout.splitlines() if l.startswith('{"rank"')), key=lambda r: r["rank"])


def _weight_changes(out: Path) -> dict:
    """B @ A of every adapted module (float64), from the run's peft adapter."""
    from safetensors.torch import load_file
    w = load_file(out / "adapter" / "adapter_model.safetensors")
    return {k[:-len("lora_A.weight")]: w[k[:-len("lora_A.weight")] + "lora_B.weight"].double() @ w[k].double()
            for k in w if k.endswith("lora_A.weight")}


def _rel_err(out: Path, ref: Path) -> float:
    x, y = _weight_changes(out), _weight_changes(ref)
    assert x.keys() == y.keys() and x, (out, ref)
    return max(((x[k] - y[k]).norm() / y[k].norm().clamp_min(1e-30)).item() for k in x)


def _tokens_per_s(out: Path, lengths: list[int]) -> float:
    """Padded batch tokens of steps 2.. over their wall time (step 1 includes warm-up)."""
    state = json.loads(sorted((out / "checkpoints").glob("step-*"))[-1].joinpath("state.json").read_text())
    per_step, order = state["batches_per_step"], state["order"]
    log = [json.loads(l) for l in (out / "loss.jsonl").read_text().splitlines()][1:]
    tokens = sum(len(b) * max(lengths[i] for i in b) for r in log
                 for b in order[(r["step"] - 1) * per_step:r["step"] * per_step])
    return tokens / sum(r["seconds"] for r in log)


def _data(a, work: Path):
    """The training rows (synthetic needle and QA prompts of --length tokens) and their encoded lengths."""
    import pandas as pd
    from transformers import AutoTokenizer

    from swaa.evaluation.data import make_dataset
    from swaa.models import default_model_path
    from swaa.training.sft_data import encode_dataset
    tok = AutoTokenizer.from_pretrained(default_model_path() if a.model == "default" else a.model)
    df = make_dataset(tok, lengths=(a.length,), tasks=("needle", "qa"), n=a.steps * a.batch_size)
    path = work / "data.jsonl"
    df.to_json(path, orient="records", lines=True)
    examples, _ = encode_dataset(tok, pd.read_json(path, lines=True), max_length=None, response_column="answer")
    return path, [len(e["input_ids"]) for e in examples]


def _versions() -> dict:
    import accelerate
    import peft
    import transformers
    return dict(torch=torch.__version__, transformers=transformers.__version__, accelerate=accelerate.__version__,
                peft=peft.__version__, python=platform.python_version())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run the 2 processes on CPU over gloo (a check of the script)")
    p.add_argument("--model", default="default", help="a model folder, or 'default' (SmolLM2-135M-Instruct)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2, help="per process and batch")
    p.add_argument("--length", type=int, default=None, help="prompt tokens (default 1024 on GPUs, 128 with --cpu)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "sft_multi_gpu", help="working folder (runs)")
    p.add_argument("--results", type=Path, default=None,
                   help="default benchmarks/results/sft_fsdp_2xh200.jsonl on GPUs, OUT/sft_cpu_check.jsonl with --cpu")
    a = p.parse_args()
    kind = "cpu" if a.cpu or not torch.cuda.is_available() else "gpu"
    if kind == "gpu" and torch.cuda.device_count() < 2:
        raise SystemExit(f"{torch.cuda.device_count()} GPU here; this needs 2 (or --cpu)")
    a.length = a.length or (1024 if kind == "gpu" else 128)
    results = a.results or (ROOT / "benchmarks" / "results" / "sft_fsdp_2xh200.jsonl" if kind == "gpu"
                            else a.out / "sft_cpu_check.jsonl")
    a.out.mkdir(parents=True, exist_ok=True)
    data, lengths = _data(a, a.out)
    args = _sft_args(a, data)
    ref = a.out / "cpu_reference"
    subprocess.run([sys.executable, "-m", "swaa.cli", "sft", *args, "--device", "cpu", "--gradient-accumulation-steps",
                    "2", "--no-merge", "--no-resume", "--out", str(ref)], check=True, env=_env(a), capture_output=True)
    key = dict(model=a.model, model_fingerprint=model_fingerprint(None if a.model == "default" else a.model),
               data_sha256=hashlib.sha256(data.read_bytes()).hexdigest()[:16], sft_args=args, **_versions())
    rows = []
    for config in CONFIGS:
        for run, stop in (("full", 0), ("resumed", a.steps - 1)):
            out = a.out / f"{config}_{run}"
            shutil.rmtree(out, ignore_errors=True)                     # each run starts from nothing
            ranks = _launch(a, config, [*args, "--no-merge"], out, stop)
            row = dict(config=config, run=run, kind=kind, devices=[r["device"] for r in ranks],
                       distributed=ranks[0]["distributed"], codes=[r["codes"] for r in ranks],
                       peak_memory_gib=[round(r["peak_memory_bytes"] / 2**30, 3) for r in ranks],
                       tokens_per_s=round(_tokens_per_s(out, lengths), 1),
                       ranks_agree=len({r["adapter_sha256"] for r in ranks}) == 1,
                       rel_err_vs_cpu=_rel_err(out, ref))
            if run == "resumed":
                row["rel_err_vs_full"] = _rel_err(out, a.out / f"{config}_full")
            row["pass"] = (row["ranks_agree"] and row["rel_err_vs_cpu"] <= PASS[kind]["vs_cpu"]
                           and row.get("rel_err_vs_full", 0.0) <= PASS[kind]["vs_full"])
            if kind == "gpu":
                row["gpu"] = torch.cuda.get_device_name(0)
            rows.append(dict(row, **key))
            print(json.dumps(row), flush=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"written: {results} ({sum(r['pass'] for r in rows)} of {len(rows)} rows pass)")


if __name__ == "__main__":
    main()
