"""Run by test_sft_fsdp.py under ``accelerate launch --config_file configs/accelerate/fsdp.yaml``: ``swaa sft`` (the
command's own main, in each process) on a tiny model folder; with STOP_AT > 0 it is interrupted after that step (as
Ctrl-C would: KeyboardInterrupt) and then run again with the same arguments, which resumes from the checkpoint.

    accelerate launch --config_file configs/accelerate/fsdp.yaml tests/integration/fsdp_sft_job.py STOP_AT SFT_ARGS...

Each process prints one JSON line: rank, the exit codes of its runs, and how its prepared model held the weights
(the parameters that are DTensors sharded over the processes, the elements it held of them, and their full size).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import swaa.training.sft as sft  # noqa: E402
from swaa.cli import main  # noqa: E402

_train_sft = sft.train_sft
_seen = {}


def _observed(stop):
    """train_sft as the command calls it, with the interruption added and its Accelerator kept for the report."""
    def on_step(step, loss):
        if step == stop:
            raise KeyboardInterrupt

    def train_sft(*args, **kwargs):
        _seen["accelerator"] = kwargs["accelerator"]
        return _train_sft(*args, on_step=on_step, **kwargs)
    return train_sft


def _sharding(accelerator) -> dict:
    from torch.distributed.tensor import DTensor, Shard
    model = accelerator._models[-1]
    shards = [p for p in model.parameters() if isinstance(p, DTensor) and p.placements == (Shard(0),)]
    return dict(params=sum(1 for _ in model.parameters()), sharded=len(shards),
                local=sum(p.to_local().numel() for p in shards), full=sum(p.numel() for p in shards))


def run(stop: int, args: list[str]) -> None:
    codes = []
    if stop:
        sft.train_sft = _observed(stop)
        codes.append(main(["sft", *args]))
    sft.train_sft = _observed(None)
    codes.append(main(["sft", *args]))
    acc = _seen["accelerator"]
    row = dict(rank=acc.process_index, world=acc.num_processes, codes=codes, **_sharding(acc))
    sys.stdout.write(json.dumps(row) + "\n")           # one write per line: both ranks share the pipe
    sys.stdout.flush()


def _close_process_group() -> None:
    # both ranks leave together and take gloo down before the interpreter exits (see ddp_sft_job.py)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        run(int(sys.argv[1]), sys.argv[2:])
    finally:
        _close_process_group()
