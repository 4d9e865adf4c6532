"""Integrations: transformers (attention registry, cache), vLLM (plugin)."""
