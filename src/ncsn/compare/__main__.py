"""``python -m ncsn.compare``: see ``ncsn.compare``."""

import sys

from .cli import main

sys.exit(main())
