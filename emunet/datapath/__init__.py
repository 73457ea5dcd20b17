"""emunet's userspace datapath: a pure pipeline (frames in, actions out) per node."""

from emunet.datapath.actions import Action, Drop, Encap, Send
from emunet.datapath.pipeline import Datapath
from emunet.datapath.reasons import DropReason
from emunet.datapath.tables import NodeTables

__all__ = ["Action", "Datapath", "Drop", "DropReason", "Encap", "NodeTables", "Send"]
