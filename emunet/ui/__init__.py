"""`emunet ui`: a live web view of the cluster map, its flows and a packet's journey."""
