"""`python -m emunet.dns`: the same as `python -m emunet.dns.server`."""

import sys

from emunet.dns.server import main

sys.exit(main())
