"""``swaa sft`` (the command's own main, in each process of a launch); with STOP_AT > 0 it is interrupted after that
step (as Ctrl-C would: KeyboardInterrupt) and then run again with the same arguments, which resumes from the
checkpoint. Run by test_sft_fsdp.py (FSDP on 2 CPU processes) and by benchmarks/sft_multi_gpu.py (DDP and FSDP).

    accelerate launch --config_file configs/accelerate/fsdp.yaml tests/integration/sft_cli_job.py STOP_AT SFT_ARGS...

Each process prints one JSON line: rank, the exit codes of its runs, how the run was spread, how its prepared model
held the weights (the parameters that are DTensors sharded over the processes, the elements it held of them, and
their full size), its peak memory (the GPU's allocations, or the process's resident size on CPU) and a digest of
the trained LoRA weights as gathered whole in this process (equal on every rank when the ranks agree).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import swaa.training.sft as sft  # noqa: E402
from swaa.cli import main  # noqa: E402
from swaa.training.sft_parallel import strategy  # noqa: E402
from ddp_sft_job import leave_launch  # noqa: E402

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


def _sharding(model) -> dict:
    from torch.distributed.tensor import DTensor, Shard
    shards = [p for p in model.parameters() if isinstance(p, DTensor) and p.placements == (Shard(0),)]
    return dict(params=sum(1 for _ in model.parameters()), sharded=len(shards),
                local=sum(p.to_local().numel() for p in shards), full=sum(p.numel() for p in shards))


def _peak_memory(device) -> int:
    import resource

    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _adapter_digest(model) -> dict:
    import hashlib

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True))
    h = hashlib.sha256()
    for k in sorted(whole):
        h.update(k.encode() + whole[k].detach().float().cpu().numpy().tobytes())
    return dict(adapter_sha256=h.hexdigest()[:16], adapter_tensors=len(whole))


def run(stop: int, args: list[str]) -> None:
    codes = []
    if stop:
        sft.train_sft = _observed(stop)
        codes.append(main(["sft", *args]))
    sft.train_sft = _observed(None)
    codes.append(main(["sft", *args]))
    acc = _seen["accelerator"]
    model = acc._models[-1]
    row = dict(rank=acc.process_index, world=acc.num_processes, codes=codes, distributed=strategy(acc),
               device=str(acc.device), peak_memory_bytes=_peak_memory(acc.device), **_sharding(model),
               **_adapter_digest(model))
    sys.stdout.write(json.dumps(row) + "\n")           # one write per line: both ranks share the pipe
    sys.stdout.flush()


if __name__ == "__main__":
    leave_launch(lambda: run(int(sys.argv[1]), sys.argv[2:]))
