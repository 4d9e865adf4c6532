"""``python -m swaa.cli``: the `swaa` command."""
import sys

from .main import main

sys.exit(main())
