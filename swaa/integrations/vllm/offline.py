"""Offline vLLM with a SWAA config: build an engine the standard way (``hf_overrides``), generate with prompt
log-probabilities, and read how many KV blocks requests hold, per KV-cache group, from vLLM's own block accounting.

Import this only in a process that runs vLLM (``import vllm`` takes ~15 s on 2 cores; vLLM on CPU needs
``VLLM_CPU_KVCACHE_SPACE`` and no ``TRITON_INTERPRET``). Engines are spawned processes unless
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which the block readers need (they read the in-process scheduler).
"""
from __future__ import annotations

import os

from ...config import SWAAConfig

__all__ = ["make_llm", "engine_for", "generate", "kv_blocks_held", "model_blocks", "kv_blocks_trace", "prepare_cpu_env"]


def prepare_cpu_env(kv_cache_gib: int = 1) -> None:
    """Environment vLLM's CPU engine needs in this process (before ``import vllm``)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    if os.environ.get("TRITON_INTERPRET"):
        os.environ.pop("TRITON_INTERPRET")      # vLLM would take the interpreter for a GPU driver


def make_llm(model: str, cfg: SWAAConfig | dict | None, **kwargs):
    """``vllm.LLM`` for ``model`` with ``cfg`` passed as ``hf_overrides={"swaa_config": ...}`` (None: plain vLLM).
    The config is checked here first against the model's own config (:func:`rules.config_for_model`), so that a bad
    field or a model with a native window is named before any engine starts."""
    overrides = dict(kwargs.pop("hf_overrides", None) or {})
    if cfg is not None:
        overrides["swaa_config"] = SWAAConfig.from_dict(cfg).to_dict()
        from .rules import config_for_model
        config_for_model(model, overrides, revision=kwargs.get("revision"),
                         trust_remote_code=kwargs.get("trust_remote_code", False))
    from vllm import LLM
    return LLM(model, hf_overrides=overrides or None, **kwargs)


def engine_for(model: str, cfg: SWAAConfig | dict | None, *, device: str, max_model_len: int, seed: int = 0,
               **vllm_kwargs):
    """The engine the eval and self-distillation runs use: the CPU environment prepared, fp32 on CPU (as the HF
    model there) or the checkpoint's dtype elsewhere, ``vllm_kwargs`` on top."""
    prepare_cpu_env()
    kwargs = dict(dtype="float32" if str(device) == "cpu" else "auto", seed=seed, max_model_len=max_model_len)
    kwargs.update(vllm_kwargs)
    return make_llm(model, cfg, **kwargs)


def generate(llm, prompts_ids: list[list[int]], max_tokens: int = 16, prompt_logprobs: bool = True,
             temperature: float = 0.0, seed: int | None = None, ignore_eos: bool = False) -> list[dict]:
    """Greedy (or sampled) generation from token ids: [{"tokens": [...], "text": str, "prompt_logprobs":
    [logprob of token t given tokens < t for t >= 1]}]."""
    from vllm import SamplingParams
    sp = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed,
                        prompt_logprobs=0 if prompt_logprobs else None, ignore_eos=ignore_eos)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts_ids], sp, use_tqdm=False)
    rows = []
    for ids, o in zip(prompts_ids, outs):
        lp = None
        if prompt_logprobs:
            lp = [d[t].logprob for d, t in zip(o.prompt_logprobs[1:], ids[1:])]
        rows.append({"tokens": list(o.outputs[0].token_ids), "text": o.outputs[0].text, "prompt_logprobs": lp})
    return rows


def kv_blocks_held(llm) -> list[dict]:
    """Per KV-cache group of the in-process engine: its spec's kind, its layers and the blocks its requests hold
    now (null blocks excluded). A block of a group holds one page of each of its layers."""
    core = _core(llm)
    groups = core.scheduler.kv_cache_config.kv_cache_groups
    held = []
    for manager in core.scheduler.kv_cache_manager.coordinator.single_type_managers:
        group = groups[manager.kv_cache_group_id]
        blocks = sum(1 for bs in manager.req_to_blocks.values() for b in bs if not b.is_null)
        held.append(dict(kind=type(group.kv_cache_spec).__name__, layers=len(group.layer_names), blocks=blocks))
    return held


def model_blocks(held: list[dict]) -> float:
    """Blocks of :func:`kv_blocks_held` in whole-model blocks (one page of every layer), comparable across configs."""
    layers = sum(g["layers"] for g in held)
    return sum(g["blocks"] * g["layers"] for g in held) / layers


def _core(llm):
    core = getattr(llm.llm_engine.engine_core, "engine_core", None)
    if core is None:
        raise RuntimeError("reading vLLM's block tables needs the in-process engine core: set "
                           "VLLM_ENABLE_V1_MULTIPROCESSING=0 before creating the LLM")
    return core


def kv_blocks_trace(llm, prompt_ids: list[int], max_tokens: int) -> list[list[dict]]:
    """:func:`kv_blocks_held` after each engine step of one request (``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
    from vllm import SamplingParams
    _core(llm)
    engine = llm.llm_engine
    engine.add_request("swaa-kv-trace", {"prompt_token_ids": prompt_ids},
                       SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
    trace = []
    while engine.has_unfinished_requests():
        engine.step()
        trace.append(kv_blocks_held(llm))
    return trace
