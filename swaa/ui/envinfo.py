"""Environment and device report: versions, device, threads, attention backends (for notebook 00 and `swaa info`)."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform

__all__ = ["environment_report"]

PACKAGES = ("torch", "transformers", "vllm", "triton", "peft", "accelerate", "papermill", "ipywidgets", "jupyterlab")


def _version(pkg: str) -> str | None:
    for name in (pkg, f"{pkg}-cpu"):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def environment_report() -> dict:
    """A flat dict: python, package versions (None = not installed), device, CPU threads, backends."""
    import torch

    from .. import __version__
    from ..attention import available_backends

    rep = {"swaa": __version__, "python": platform.python_version(), "machine": platform.machine()}
    rep.update({p: _version(p) for p in PACKAGES})
    rep["cpu_cores"] = os.cpu_count()
    rep["torch_threads"] = torch.get_num_threads()
    rep["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    for name, why in available_backends().items():
        rep[f"backend:{name}"] = "available" if why is None else f"unavailable: {why}"
    return rep
