"""`python -m emunet.dns`: the same as `python -m emunet.dns.server`."""

import sys

from .server import main

sys.exit(main())
