"""Evaluation on long-context data: datasets and loaders, chat prompts, rule scoring and answer NLL, the LLM judge,
settings grids, and the resumable eval loop (``run_eval``)."""
