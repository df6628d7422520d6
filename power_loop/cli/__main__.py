"""``python -m power_loop.cli``: the same as the ``power-loop`` console script."""

import sys

from power_loop.cli.main import main

sys.exit(main())
