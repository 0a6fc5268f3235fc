"""``python -m jaxcalc``: the same as the ``jaxcalc`` console script."""

import sys

from jaxcalc.cli import main

sys.exit(main())
