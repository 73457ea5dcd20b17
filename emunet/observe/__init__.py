"""Watching the packet: flow events, `observe`, `trace` and `capture`.

`hook` records datapath decisions as compact tuples (agent side, next to the pipeline);
`record` turns them into neutral JSON records the agent appends to a size-capped per-node file
(`flowlog`); `hubble` renders records as Hubble-style flows with names from the cluster state;
`filters` selects them like `hubble observe`; `trace` sends a real probe and tells its journey;
`cli` holds the three verbs' argument parsers.
"""
