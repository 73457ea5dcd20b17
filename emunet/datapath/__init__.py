"""emunet's userspace datapath: a pure pipeline (frames in, actions out) per node."""

from .actions import Action, Drop, Encap, Send
from .pipeline import Datapath
from .reasons import DropReason
from .tables import NodeTables

__all__ = ["Action", "Datapath", "Drop", "DropReason", "Encap", "NodeTables", "Send"]
