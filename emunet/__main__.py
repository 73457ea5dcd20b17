"""`python -m emunet`: the same as the `emunet` command."""

import sys

from .cli import main

sys.exit(main())
