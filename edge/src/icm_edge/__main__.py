"""``python -m icm_edge``: the ``icm-edge`` command."""

import sys

from .cli import main

sys.exit(main())
