"""`python -m emunet.agent`: run one node agent (see emunet.agent.loop)."""
import sys

from emunet.agent.loop import main

sys.exit(main())
