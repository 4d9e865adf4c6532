"""SFT on several processes: the Accelerator a launch asks for (DDP, or FSDP2 also on CPU processes), the FSDP
settings that ``swaa sft`` refuses, and the trained model unsharded at the end.

accelerate 1.15 makes an FSDP launch config into FSDP only on accelerator devices: with ``Accelerator(cpu=True)``
(CPU processes over gloo) it runs DDP without a word, because ``AcceleratorState`` upgrades MULTI_GPU, MULTI_XPU,
... to FSDP but not MULTI_CPU. torch's FSDP2 (``fully_shard``) runs on CPU over gloo, and accelerate's FSDP2
preparation, no-sync and DTensor-aware clipping have nothing device-specific, so :func:`adopt_launch` gives such an
Accelerator the FSDP plugin that the launch describes (the FSDP_* variables ``accelerate launch`` sets) and records FSDP
as the distributed type in both of accelerate's shared states, as accelerate itself does on GPUs (every new
``AcceleratorState`` copies the process state in; the one difference that follows, a barrier given the local rank as
its device, runs on gloo). Refused, with the fix:

- ``fsdp_version: 1``: on CPU processes torch's FSDP1 wrapper rejects accelerate's device ("Inconsistent compute
  device and `device_id`: cpu vs cpu:0") and accelerate refuses its ``sync_module_states``; only FSDP2 is run.
- ``fsdp_cpu_ram_efficient_loading: true``: transformers then loads the weights in the first process only and leaves
  the others on the meta device, and every process reads them (the run's fingerprint, LoRA's placement).
- a multi-process launch whose Accelerator sees one process (``Accelerator()`` on a machine without a GPU does not
  join a torchrun launch): each process would train alone.
"""
from __future__ import annotations

import os

__all__ = ["launch_accelerator", "adopt_launch", "check_launch", "strategy", "unsharded_model"]

_FIX = "(configs/accelerate/fsdp.yaml has the settings that run)"


def _fsdp_launch() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_launch() -> None:
    """A ValueError naming the FSDP setting of this launch that ``swaa sft`` cannot run, and its fix."""
    if not _fsdp_launch():
        return
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(f"the launch config sets fsdp_version: {version}; swaa sft runs FSDP2: set fsdp_version: 2 "
                         f"{_FIX}")
    if os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false").lower() == "true":
        raise ValueError("the launch config sets fsdp_cpu_ram_efficient_loading: true, which leaves the weights on the "
                         "meta device in all processes but the first, and swaa sft reads them in each: set it to "
                         f"false {_FIX}")


def launch_accelerator(cpu: bool | None = None):
    """The Accelerator of this launch (one process, DDP or FSDP2); ``cpu`` defaults to "no GPU here"."""
    import torch
    from accelerate import Accelerator
    check_launch()                          # before Accelerator(): accelerate raises its own errors on some of them
    return adopt_launch(Accelerator(cpu=not torch.cuda.is_available() if cpu is None else cpu))


def adopt_launch(accelerator):
    """``accelerator`` set up for what the launch asks: FSDP2 on CPU processes under an FSDP config (see the module
    docstring); a ValueError for what cannot run."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != world:
        raise ValueError(f"the launch has {world} processes but this Accelerator sees {accelerator.num_processes}: "
                         "on a machine without a GPU create it with Accelerator(cpu=True)")
    if accelerator.distributed_type == DistributedType.MULTI_CPU and _fsdp_launch():
        check_launch()
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        accelerator.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ValueError(f"this Accelerator runs FSDP1; swaa sft runs FSDP2: set fsdp_version: 2 {_FIX}")
    return accelerator


def strategy(accelerator) -> str:
    """How the run is spread: "FSDP2", "DDP" or "one process"."""
    return "FSDP2" if accelerator.is_fsdp2 else "DDP" if accelerator.num_processes > 1 else "one process"


def unsharded_model(accelerator, model, build):
    """The trained PeftModel as a plain module. Under FSDP its weights are gathered (every process calls this) into
    ``build()``, a fresh PeftModel of the same shape made on the main process, which gets it on the CPU; the other
    processes get None. Otherwise every process gets its unwrapped model."""
    if not accelerator.is_fsdp2:
        return accelerator.unwrap_model(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not accelerator.is_main_process:
        return None
    plain = build()
    plain.load_state_dict(full, assign=True)          # the gathered tensors become the parameters: no second copy
    plain.get_base_model().tie_weights()              # assign unties shared embeddings
    return plain

