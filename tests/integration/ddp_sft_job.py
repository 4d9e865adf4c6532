"""Run by test_sft.py under torchrun: train_sft on a tiny model in 2 CPU processes (DDP over gloo); on a machine
with two GPUs the same job runs on them over NCCL.

    torchrun --nproc_per_node 2 tests/integration/ddp_sft_job.py OUT [STOP_AT_STEP]

Each process prints one JSON line: rank, world, steps, resumed_from, how the run was spread and the sum of its LoRA
weights; the main process also prints the loss log. STOP_AT_STEP interrupts the run after that step (as Ctrl-C
would). The clipping norm (0.5) is below the gradients' norms, so every step clips.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd  # noqa: E402

from swaa import SWAAConfig  # noqa: E402
from swaa.training.sft import SFTConfig, read_loss_log, train_sft  # noqa: E402
from swaa.training.sft_parallel import launch_accelerator  # noqa: E402
from tiny_models import make_model  # noqa: E402


class TinyTok:
    """Character-level tokenizer with a chat template (the tiny models' vocabulary is 97)."""
    pad_token_id = 0

    def apply_chat_template(self, msgs, add_generation_prompt=False, tokenize=False):
        return "".join(f"<{m['role'][0]}>{m['content']}|" for m in msgs) + ("<a>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % 90) for c in text]}


def _emit(row: dict) -> None:
    # one write per line: two ranks print to the same pipe, and print() writes the text and the newline separately
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def job(accumulation: int = 1) -> dict:
    """The run's inputs (also the one-process reference in test_sft.py, with accumulation 2)."""
    data = pd.DataFrame([dict(prompt=f"q{i}: " + "abc " * (1 + i % 4), response=f"ans {i}") for i in range(12)])
    config = SFTConfig(r=4, alpha=8, dropout=0.1, batch_size=2, gradient_accumulation_steps=accumulation, max_steps=4,
                       save_every=2, lr=5e-3, max_grad_norm=0.5)
    return dict(model=make_model("llama", seed=2), tok=TinyTok(), data=data, config=config,
                swaa=SWAAConfig(sliding_window_size=4, keep_first=1, force_fa_decode=True))


def lora_sum(model) -> float:
    return sum(p.double().sum().item() for n, p in model.named_parameters() if "lora" in n)


def main(out: str, stop: int | None) -> None:
    acc = launch_accelerator()

    def on_step(step, loss):
        if step == stop:
            raise KeyboardInterrupt

    try:
        run = train_sft(**job(), out=out, accelerator=acc, on_step=on_step, progress=False)
    except KeyboardInterrupt:
        _emit(dict(rank=acc.process_index, interrupted=True))
        return
    row = dict(rank=acc.process_index, world=acc.num_processes, steps=run.steps, resumed_from=run.resumed_from,
               wsum=lora_sum(run.model), device=str(acc.device), backend=str(getattr(acc.state, "backend", None)),
               distributed=run.report["distributed"])
    if acc.is_main_process:
        row["log"] = read_loss_log(out)
    _emit(row)


def leave_launch(body) -> None:
    """Run ``body()`` in a launched process, then leave: both ranks meet, the process group is destroyed and the
    process exits without the interpreter's teardown, where a rank whose peer's gloo threads were still up has
    aborted with "terminate called without an active exception" (in CI, the interrupted run). An exception in
    ``body`` still ends the process with its traceback and a non-zero exit code."""
    import os

    import torch.distributed as dist
    try:
        body()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    leave_launch(lambda: main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
