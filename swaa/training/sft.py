"""LoRA SFT under a SWAA config: our own small training loop (accelerate-aware), checkpoints, resume, merge.

    run = train_sft(model, tok, data, "out/sft", swaa=SWAAConfig(sliding_window_size=64, keep_first=4,
                    force_fa_decode=True), config=SFTConfig(max_steps=40))
    merge_and_save(run.model, tok, "out/sft/merged")      # load_model("out/sft/merged") re-applies the SWAA config

Why our own loop and not transformers' Trainer: every piece that resume and exactness rest on is here and tested -
the data order (length-grouped batches computed once from the seed and stored in each checkpoint), the step counter,
the random draws (LoRA dropout seeded per batch, so the same masks after a resume) and the loss log (cut back to the
checkpoint's step on resume), so an interrupted and resumed run ends with the adapter weights and loss log of an
uninterrupted one. The loss is the model's own causal-LM loss (mean over answer tokens of the batch); labels are
passed to the model, so ``apply_swaa``'s pre-forward hook gives every row its own prompt length and FA decode covers
exactly that row's answer tokens.

Defaults follow the paper: r=16, alpha=32, q/k/v projections, rsLoRA, lr 1e-4 with 5% warm-up and linear decay.
Several processes: the model and optimizer go through ``Accelerator.prepare`` (DDP, or FSDP2 from ``accelerate launch
--config_file configs/accelerate/{ddp,fsdp}.yaml``, on GPUs or CPU processes: :mod:`swaa.training.sft_parallel`). One
optimizer step takes ``P x A`` batches (P processes, A = ``gradient_accumulation_steps``): step ``s`` of process ``r``
accumulates batches ``order[(s * P + r) * A + a]`` for ``a < A``, each batch's loss the mean over its answer tokens
and the step's gradient the mean over its batches, so 2 processes x 1 and 1 process x 2 train the same adapter (to
float rounding; docs/training.md gives the measured differences). Each batch's random draws (LoRA dropout) come from
a generator seeded by (seed, batch index), the same wherever and whenever the batch runs. Checkpoints:
:mod:`swaa.training.sft_checkpoint`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import SWAAConfig
from ..store.fingerprint import model_fingerprint
from ..store.rows import atomic_write_text, read_rows
from .sft_checkpoint import check_resume, latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["SFTConfig", "SFTRun", "add_lora", "check_target_modules", "train_sft", "merge_and_save",
           "latest_checkpoint", "read_loss_log"]


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
    batch_size: int = 4                   # per process and batch
    gradient_accumulation_steps: int = 1  # batches per process and optimizer step
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
        for name in ("r", "batch_size", "gradient_accumulation_steps", "epochs", "save_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps={self.max_steps} must be >= 1 (or None: train `epochs` epochs)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"SFTConfig.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


@dataclass
class SFTRun:
    model: object                         # the PeftModel (plain: under FSDP on the main process, None elsewhere)
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


def read_loss_log(out) -> list[dict]:
    return read_rows(Path(out) / "loss.jsonl", require="step")


def _fingerprint(model, examples, config: SFTConfig, swaa: SWAAConfig, per_step: int) -> str:
    """The base model, the data, the settings that change the trained weights and the batches per optimizer step
    (processes x gradient accumulation, not either alone: the same product trains the same weights)."""
    h = hashlib.sha256(model_fingerprint(model).encode())
    for e in examples:
        h.update(json.dumps([e["input_ids"], e["labels"]]).encode())
    keep = {k: v for k, v in asdict(config).items() if k not in ("save_every", "keep_checkpoints",
                                                                   "gradient_checkpointing",
                                                                   "gradient_accumulation_steps")}
    h.update(json.dumps([keep, swaa.to_dict(), per_step], sort_keys=True, default=list).encode())
    return h.hexdigest()[:16]


def _data_order(lengths, config: SFTConfig, world: int) -> tuple[list[list[int]], int]:
    from .sft_data import length_grouped_batches
    per_step = world * config.gradient_accumulation_steps
    per_epoch = length_grouped_batches(lengths, config.batch_size, config.seed, 0)
    if len(per_epoch) < per_step:
        raise ValueError(f"{len(lengths)} examples make {len(per_epoch)} batches of {config.batch_size}, fewer than "
                         f"the {per_step} of one optimizer step ({world} processes x gradient_accumulation_steps="
                         f"{config.gradient_accumulation_steps}); use more data or a smaller batch_size")
    total = config.max_steps or config.epochs * (len(per_epoch) // per_step)
    order, epoch = [], 0
    while len(order) < total * per_step:
        order += per_epoch if epoch == 0 else length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        epoch += 1
    return order[:total * per_step], total


def _batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s random draws: a function of the run's seed and the batch alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{index}".encode()).digest()[:8], "little") >> 1


def _rewrite_log(path: Path, upto: int) -> None:
    rows = [r for r in read_rows(path, require="step") if r["step"] <= upto]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def train_sft(model, tok, data, out, *, swaa: SWAAConfig | dict | None, config: SFTConfig | None = None,
              resume: bool = True, accelerator=None, on_step=None, progress: bool = True) -> SFTRun:
    """LoRA-train ``model`` (a plain HF causal LM) on ``data`` (DataFrame/list of dicts with ``prompt`` and
    ``config.response_column``) under ``swaa``; everything is written under ``out``:

    ``loss.jsonl`` (one row per step: step, loss, lr, tokens, seconds, appended as it goes), ``checkpoints/step-N``
    (adapter, optimizer, scheduler, step and data order; the last ``keep_checkpoints`` kept), ``adapter/`` (the final
    adapter, peft format). With ``resume=True`` a run continues from the latest checkpoint made with the same base
    model (by its fingerprint), data and settings, on any number of processes with the same batches per optimizer
    step (anything else there is an error); ``resume=False`` starts over and removes them. ``on_step(step, loss)`` is
    called after each optimizer step. ``accelerator`` defaults to the launch's
    (:func:`swaa.training.sft_parallel.launch_accelerator`).
    ``model`` itself is changed: SWAA applied and LoRA layers injected (use ``run.model``; :func:`merge_and_save`
    merges into it).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from ..integrations.transformers import apply_swaa
    from .sft_data import collate, encode_dataset
    from .sft_parallel import adopt_launch, launch_accelerator, strategy, unsharded_model

    config = config or SFTConfig()
    swaa = SWAAConfig.from_dict(swaa) if swaa is not None else SWAAConfig()
    accelerator = adopt_launch(accelerator or launch_accelerator())
    world, rank, accum = accelerator.num_processes, accelerator.process_index, config.gradient_accumulation_steps
    out = Path(out)
    examples, report = encode_dataset(tok, data, max_length=config.max_length, response_column=config.response_column)
    if progress and accelerator.is_main_process and report["dropped_too_long"]:
        print(f"sft: dropped {report['dropped_too_long']} of {report['rows']} examples longer than "
              f"{config.max_length} tokens")
    fingerprint = _fingerprint(model, examples, config, swaa, world * accum)
    order, total = _data_order([len(e["input_ids"]) for e in examples], config, world)

    torch.manual_seed(config.seed)
    apply_swaa(model, swaa)
    model.config.use_cache = False
    base_class, base_config = type(model), copy.deepcopy(model.config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    report.update(trainable_params=sum(p.numel() for p in trainable), total_steps=total, fingerprint=fingerprint,
                  processes=world, gradient_accumulation_steps=accum, distributed=strategy(accelerator))
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)
    model, optimizer = accelerator.prepare(model, optimizer)     # the scheduler counts optimizer steps itself

    log_path, start, resumed = out / "loss.jsonl", 0, None
    ckpt = latest_checkpoint(out)
    if ckpt is not None and resume:
        check_resume(ckpt, world, accum, fingerprint)
        meta = load_checkpoint(ckpt, model, optimizer, scheduler)
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

    state = dict(fingerprint=fingerprint, total_steps=total, order=order, processes=world,
                 gradient_accumulation_steps=accum, batches_per_step=world * accum, swaa=swaa.to_dict(),
                 config=asdict(config))
    bar = tqdm(total=total, initial=start, desc="sft", disable=not (progress and accelerator.is_main_process))
    for step in range(start, total):
        t0 = time.perf_counter()
        losses, tokens = [], 0
        for a in range(accum):
            index = (step * world + rank) * accum + a
            batch = collate([examples[i] for i in order[index]], tok.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            torch.manual_seed(_batch_seed(config.seed, index))
            with accelerator.no_sync(model) if a + 1 < accum else nullcontext():   # gradients meet once a step
                loss = model(**batch, use_cache=False).loss
                accelerator.backward(loss / accum)
            losses.append(loss.detach())
            tokens += int((batch["labels"] != -100).sum())
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)   # the whole norm, across shards
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mean_loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
        tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "sum").item())
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(dict(step=step + 1, loss=mean_loss, lr=lr, tokens=tokens,
                                        seconds=round(time.perf_counter() - t0, 3))) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        if (step + 1) % config.save_every == 0 or step + 1 == total:
            save_checkpoint(accelerator, out, step + 1, model, optimizer, scheduler, state, config.keep_checkpoints)
        if on_step is not None:
            on_step(step + 1, mean_loss)
    bar.close()

    def build():                                               # an unsharded twin of the model, for FSDP's gather
        return add_lora(apply_swaa(base_class._from_config(copy.deepcopy(base_config)), swaa), config)
    peft_model = unsharded_model(accelerator, model, build)
    if accelerator.is_main_process:
        peft_model.save_pretrained(out / "adapter")
        (out / "report.json").write_text(json.dumps(dict(report, resumed_from=resumed, swaa=swaa.to_dict()),
                                                    indent=1) + "\n")
    if peft_model is not None:
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
