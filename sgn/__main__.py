"""``python -m sgn ...`` is the ``sgn`` command (``torchrun -m sgn train ...`` starts a distributed run)."""

import sys

from sgn.cli import main

sys.exit(main())
