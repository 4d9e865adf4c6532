"""swaa: Sliding Window Attention Adaptation workbench.

    from swaa import SWAAConfig, apply_swaa, load_model
    model, tok = load_model()
    apply_swaa(model, SWAAConfig(sliding_window_size=256, keep_first=4, force_fa_decode=True))
"""
from .config import SWAAConfig, load_settings, pattern_to_layers, layers_to_pattern

__version__ = "0.1.0"
__all__ = ["SWAAConfig", "apply_swaa", "load_model", "load_settings", "pattern_to_layers", "layers_to_pattern",
           "swaa_attention"]


def __getattr__(name):  # keep `import swaa` light: torch/transformers load on first use
    if name == "apply_swaa":
        from .integrations.transformers import apply_swaa
        return apply_swaa
    if name == "load_model":
        from .integrations.transformers import load_model
        return load_model
    if name == "swaa_attention":
        from .attention import swaa_attention
        return swaa_attention
    raise AttributeError(f"module 'swaa' has no attribute {name!r}")
