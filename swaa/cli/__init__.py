"""The `swaa` command: ``main`` runs it (``python -m swaa.cli ...`` or the ``swaa`` script)."""
from .main import main

__all__ = ["main"]
