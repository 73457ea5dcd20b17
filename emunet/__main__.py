"""`python -m emunet`: the same as the `emunet` command."""

import sys

from emunet.cli.main import main

sys.exit(main())
