"""``python -m rnnkit`` (also what ``torchrun -m rnnkit`` runs): the ``rnnkit`` command."""
import sys

from .cli import main

sys.exit(main())
