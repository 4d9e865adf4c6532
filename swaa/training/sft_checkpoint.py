"""SFT checkpoints: what a resume needs, gathered whole, so that any number of processes reloads it.

    OUT/checkpoints/step-000050/
        adapter.safetensors   the trainable (LoRA) weights, whole, keyed by their parameter names in the PeftModel
        optimizer.pt          AdamW's state of those weights, whole, keyed by the same names
        scheduler.pt          the learning-rate schedule's state
        state.json            step, data order (the example indices of every batch), fingerprint, processes,
                              gradient accumulation, the SWAA and SFT settings

LoRA's trainable state is small (r=16 on q/k/v of Qwen3-4B: 8.0M parameters, 32 MB in fp32, twice that in Adam's
moments), so a checkpoint gathers it onto the main process with torch.distributed.checkpoint's full state dicts (under
FSDP the shards are all-gathered, under DDP one replica is taken) and writes one copy; a resume hands every process
its part (under FSDP its shard). The frozen base weights are never written. There is no RNG file: each batch's random
draws (LoRA dropout) come from a generator seeded by (seed, batch index) (:mod:`swaa.training.sft`), so the step and
the data order determine them. A checkpoint is written to a temporary folder and renamed: it is complete or absent.

A run resumes on P processes with gradient accumulation A whenever P x A (the batches of one optimizer step) is the
checkpoint's: 2 processes x 1 continue as 1 process x 2, or the reverse, with the same batches in every step.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["latest_checkpoint", "save_checkpoint", "load_checkpoint", "check_resume", "trainable_state"]


def latest_checkpoint(out) -> Path | None:
    """The newest complete checkpoint folder under ``OUT/checkpoints`` (written atomically), or None."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def _full(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


def trainable_state(model) -> dict:
    """The trainable weights of a prepared model, whole, as CPU tensors on the main process ({} on the others).
    Every process must call it (under FSDP it all-gathers)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    state = get_model_state_dict(model, options=_full(cpu_offload=True, ignore_frozen_params=True))
    return {k: v.detach().contiguous() for k, v in state.items()}


def save_checkpoint(accelerator, out: Path, step: int, model, optimizer, scheduler, state: dict, keep: int) -> None:
    """Write ``OUT/checkpoints/step-N`` and keep the newest ``keep``; every process calls it (the state is gathered)."""
    import torch
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    adapter = trainable_state(model)
    optim = get_optimizer_state_dict(model, optimizer, options=_full(cpu_offload=True, ignore_frozen_params=True))
    if accelerator.is_main_process:
        root = out / "checkpoints"
        target, tmp = root / f"step-{step:06d}", root / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(adapter, tmp / "adapter.safetensors")
        torch.save(optim, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(dict(state, step=step)) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(ckpt: Path, model, optimizer, scheduler) -> dict:
    """Restore the adapter, optimizer and scheduler of a prepared model from ``ckpt`` on every process (each takes
    its part of the whole state); returns the checkpoint's state.json."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    loaded = set_model_state_dict(model, load_file(ckpt / "adapter.safetensors"), options=_full(strict=False))
    if loaded.unexpected_keys:              # the fingerprint matched, so the names must too
        raise RuntimeError(f"{ckpt}: adapter weights the model does not have: {loaded.unexpected_keys[:3]}")
    set_optimizer_state_dict(model, optimizer, torch.load(ckpt / "optimizer.pt", weights_only=True),
                             options=_full())
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    return json.loads((ckpt / "state.json").read_text())


def check_resume(ckpt: Path | None, processes: int, accumulation: int, fingerprint: str | None = None) -> None:
    """A ValueError naming the setting and the fix when a run cannot continue from ``ckpt`` (None: nothing to resume);
    without ``fingerprint`` only the batches per step are checked (before the model is loaded)."""
    if ckpt is None:
        return
    meta = json.loads((ckpt / "state.json").read_text())
    per_step = meta.get("batches_per_step")
    if per_step is None:
        raise ValueError(f"{ckpt} is in the earlier per-process format (optimizer-<rank>.pt), which this version "
                         "does not read; use a new output folder, or resume=False to start over there")
    if per_step != processes * accumulation:
        fix = (f"gradient_accumulation_steps={per_step // processes}" if per_step % processes == 0 else
               f"a number of processes that divides {per_step}")
        raise ValueError(f"{ckpt} was made by {meta['processes']} processes with gradient_accumulation_steps="
                         f"{meta['gradient_accumulation_steps']} ({per_step} batches per optimizer step), and this run "
                         f"has {processes} with gradient_accumulation_steps={accumulation}: resume with {fix} (the "
                         f"same {per_step} batches per step), or resume=False to start over")
    if fingerprint is not None and meta["fingerprint"] != fingerprint:
        raise ValueError(f"{ckpt} was made with other data or settings (fingerprint {meta['fingerprint']}, now "
                         f"{fingerprint}); use a new output folder, or resume=False to start over there")
