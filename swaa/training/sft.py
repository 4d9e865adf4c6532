"""LoRA SFT under a SWAA config: our own small training loop (accelerate-aware), checkpoints, resume, merge.

    run = train_sft(model, tok, data, "out/sft", swaa=SWAAConfig(sliding_window_size=64, keep_first=4,
                    force_fa_decode=True), config=SFTConfig(max_steps=40))
    merge_and_save(run.model, tok, "out/sft/merged")      # load_model("out/sft/merged") re-applies the SWAA config

Why our own loop and not transformers' Trainer: every piece that resume and exactness rest on is in this file and
tested - the data order (length-grouped batches computed once from the seed and stored in each checkpoint), the
step counter, the RNG states (LoRA dropout draws the same masks after a resume) and the loss log (cut back to the
checkpoint's step on resume), so an interrupted and resumed run ends with the adapter weights and loss log of an
uninterrupted one. The loss is the model's own causal-LM loss (mean over answer tokens of the batch); labels are
passed to the model, so ``apply_swaa``'s pre-forward hook gives every row its own prompt length and FA decode covers
exactly that row's answer tokens.

Defaults follow the paper: r=16, alpha=32, q/k/v projections, rsLoRA, lr 1e-4 with 5% warm-up and linear decay.
Multi-GPU: the model and optimizer go through ``Accelerator.prepare`` (DDP or FSDP from ``accelerate launch
--config_file configs/accelerate/{ddp,fsdp}.yaml``); optimizer step ``s`` of process ``r`` takes batch
``order[s * world + r]``. Tested on one CPU process and on 2 CPU processes (torchrun, gloo); not run on GPUs,
and FSDP is untested.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import SWAAConfig
from ..store.fingerprint import model_fingerprint
from ..store.rows import atomic_write_text, read_rows

__all__ = ["SFTConfig", "SFTRun", "add_lora", "check_target_modules", "train_sft", "merge_and_save", "latest_checkpoint", "read_loss_log"]


@dataclass
class SFTConfig:
    r: int = 16
    alpha: int = 32
    target_modules: tuple = ("q_proj", "k_proj", "v_proj")
    rslora: bool = True
    dropout: float = 0.05
    lr: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    batch_size: int = 4
    epochs: int = 1
    max_steps: int | None = None          # when set, the run has exactly this many optimizer steps (epochs cycle)
    max_length: int | None = 2048
    gradient_checkpointing: bool = False
    save_every: int = 50                  # checkpoint every this many steps (and at the end)
    keep_checkpoints: int = 2
    seed: int = 0
    response_column: str = "response"

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        for name in ("r", "batch_size", "epochs", "save_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps={self.max_steps} must be >= 1 (or None: train `epochs` epochs)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"SFTConfig.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


@dataclass
class SFTRun:
    model: object                         # the PeftModel (unwrapped), adapter trained
    steps: int
    resumed_from: int | None
    report: dict = field(default_factory=dict)
    log_path: Path | None = None


def check_target_modules(model, target_modules) -> None:
    """Every name in ``target_modules`` names linear layers of ``model`` (a skeleton on the meta device will do)."""
    import torch
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in target_modules if t not in linear]
    if missing:
        raise ValueError(f"target modules {missing} are not in {type(model).__name__}; its linear layers are named "
                         f"{linear}: pick target_modules from these")


def add_lora(model, config: SFTConfig):
    """Wrap ``model`` with a LoRA adapter on ``config.target_modules``; names absent from the model are an error."""
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, config.target_modules)
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                      lora_dropout=config.dropout, use_rslora=config.rslora, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def latest_checkpoint(out) -> Path | None:
    """The newest complete checkpoint folder under ``OUT/checkpoints`` (written atomically), or None."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def read_loss_log(out) -> list[dict]:
    return read_rows(Path(out) / "loss.jsonl", require="step")


def _fingerprint(model, examples, config: SFTConfig, swaa: SWAAConfig, world: int) -> str:
    """The base model, the data, the settings that change the trained weights and the number of processes."""
    h = hashlib.sha256(model_fingerprint(model).encode())
    for e in examples:
        h.update(json.dumps([e["input_ids"], e["labels"]]).encode())
    keep = {k: v for k, v in asdict(config).items() if k not in ("save_every", "keep_checkpoints",
                                                                   "gradient_checkpointing")}
    h.update(json.dumps([keep, swaa.to_dict(), world], sort_keys=True, default=list).encode())
    return h.hexdigest()[:16]


def _data_order(lengths, config: SFTConfig, world: int) -> tuple[list[list[int]], int]:
    from .sft_data import length_grouped_batches
    per_epoch = length_grouped_batches(lengths, config.batch_size, config.seed, 0)
    if len(per_epoch) < world:
        raise ValueError(f"{len(lengths)} examples make {len(per_epoch)} batches of {config.batch_size}, fewer than "
                         f"the {world} processes; use more data or a smaller batch_size")
    total = config.max_steps or config.epochs * (len(per_epoch) // world)
    order, epoch = [], 0
    while len(order) < total * world:
        order += per_epoch if epoch == 0 else length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        epoch += 1
    return order[:total * world], total


def _rng_state() -> dict:
    import numpy as np
    import torch
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _adapter_state(accelerator, model) -> dict:
    from peft import get_peft_model_state_dict
    inner = accelerator.unwrap_model(model)
    full = accelerator.get_state_dict(model) if accelerator.distributed_type.name == "FSDP" else None
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(inner, state_dict=full).items()}


def _save_checkpoint(accelerator, out: Path, step: int, model, optimizer, scheduler, state: dict, keep: int):
    import torch
    from safetensors.torch import save_file

    root = out / "checkpoints"
    target = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    adapter = _adapter_state(accelerator, model)            # collective under FSDP: every process calls it
    rank = accelerator.process_index
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(optimizer.state_dict(), tmp / f"optimizer-{rank}.pt")   # per process: FSDP shards its state
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_file(adapter, tmp / "adapter.safetensors")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(dict(state, step=step)) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)                             # a checkpoint is complete or absent
        for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_checkpoint(accelerator, ckpt: Path, model, optimizer, scheduler) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    rank = accelerator.process_index
    set_peft_model_state_dict(accelerator.unwrap_model(model), load_file(ckpt / "adapter.safetensors"))
    optimizer.load_state_dict(torch.load(ckpt / f"optimizer-{rank}.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(ckpt / f"rng-{rank}.pt", weights_only=False))
    return json.loads((ckpt / "state.json").read_text())


def _rewrite_log(path: Path, upto: int) -> None:
    rows = [r for r in read_rows(path, require="step") if r["step"] <= upto]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def train_sft(model, tok, data, out, *, swaa: SWAAConfig | dict | None, config: SFTConfig | None = None,
              resume: bool = True, accelerator=None, on_step=None, progress: bool = True) -> SFTRun:
    """LoRA-train ``model`` (a plain HF causal LM) on ``data`` (DataFrame/list of dicts with ``prompt`` and
    ``config.response_column``) under ``swaa``; everything is written under ``out``:

    ``loss.jsonl`` (one row per step: step, loss, lr, tokens, seconds, appended as it goes), ``checkpoints/step-N``
    (adapter, optimizer, scheduler, RNG, step and data order; the last ``keep_checkpoints`` kept), ``adapter/``
    (the final adapter, peft format). With ``resume=True`` a run continues from the latest checkpoint made with the
    same base model (by its fingerprint), data and settings (anything else there is an error); ``resume=False``
    starts over and removes them. ``on_step(step, loss)`` is called after each optimizer step. ``model`` itself is
    changed: SWAA applied and LoRA layers injected (use ``run.model``; :func:`merge_and_save` merges into it).
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from ..integrations.transformers import apply_swaa
    from .sft_data import collate, encode_dataset

    config = config or SFTConfig()
    swaa = SWAAConfig.from_dict(swaa) if swaa is not None else SWAAConfig()
    accelerator = accelerator or Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    out = Path(out)
    examples, report = encode_dataset(tok, data, max_length=config.max_length, response_column=config.response_column)
    if progress and accelerator.is_main_process and report["dropped_too_long"]:
        print(f"sft: dropped {report['dropped_too_long']} of {report['rows']} examples longer than "
              f"{config.max_length} tokens")
    fingerprint = _fingerprint(model, examples, config, swaa, world)
    order, total = _data_order([len(e["input_ids"]) for e in examples], config, world)

    torch.manual_seed(config.seed)
    apply_swaa(model, swaa)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    report.update(trainable_params=sum(p.numel() for p in trainable), total_steps=total, fingerprint=fingerprint)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)
    model, optimizer = accelerator.prepare(model, optimizer)     # the scheduler counts optimizer steps itself

    log_path, start, resumed = out / "loss.jsonl", 0, None
    ckpt = latest_checkpoint(out)
    if ckpt is not None and resume:
        meta = json.loads((ckpt / "state.json").read_text())
        if meta["fingerprint"] != fingerprint:
            raise ValueError(f"{ckpt} was made with other data or settings (fingerprint {meta['fingerprint']}, now "
                             f"{fingerprint}); use a new output folder, or resume=False to start over there")
        meta = _load_checkpoint(accelerator, ckpt, model, optimizer, scheduler)
        start = resumed = meta["step"]
        order = meta["order"]
    elif accelerator.is_main_process:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        log_path.unlink(missing_ok=True)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if resumed is not None:
            _rewrite_log(log_path, resumed)                    # steps after the checkpoint are recomputed
    accelerator.wait_for_everyone()

    state = dict(fingerprint=fingerprint, total_steps=total, order=order, swaa=swaa.to_dict(), config=asdict(config))
    bar = tqdm(total=total, initial=start, desc="sft", disable=not (progress and accelerator.is_main_process))
    for step in range(start, total):
        t0 = time.perf_counter()
        batch = collate([examples[i] for i in order[step * world + rank]], tok.pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = model(**batch, use_cache=False).loss
        accelerator.backward(loss)
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mean_loss = accelerator.reduce(loss.detach(), "mean").item()
        tokens = int(accelerator.reduce((batch["labels"] != -100).sum(), "sum").item())
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(dict(step=step + 1, loss=mean_loss, lr=lr, tokens=tokens,
                                        seconds=round(time.perf_counter() - t0, 3))) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if (step + 1) % config.save_every == 0 or step + 1 == total:
            _save_checkpoint(accelerator, out, step + 1, model, optimizer, scheduler, state, config.keep_checkpoints)
        if on_step is not None:
            on_step(step + 1, mean_loss)
    bar.close()
    peft_model = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        peft_model.save_pretrained(out / "adapter")
        (out / "report.json").write_text(json.dumps(dict(report, resumed_from=resumed, swaa=swaa.to_dict()),
                                                    indent=1) + "\n")
    peft_model.eval()
    return SFTRun(model=peft_model, steps=total, resumed_from=resumed, report=report, log_path=log_path)


def merge_and_save(peft_model, tok, path) -> Path:
    """Merge the adapter into the base weights and save a model folder (atomically) that carries its SWAA config:
    ``load_model(path)`` gives the merged model with the config applied."""
    from ..integrations.transformers import get_swaa_config

    path = Path(path)
    merged = peft_model.merge_and_unload()
    merged.eval()
    if get_swaa_config(merged.config) is None:
        raise ValueError("the merged model has no swaa_config; train it with train_sft(..., swaa=...) first")
    merged.config.use_cache = True
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
