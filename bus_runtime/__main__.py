"""`python -m bus_runtime` is the `natstopo` command."""

import sys

from .cli import main

sys.exit(main())
