"""The node agent's process: the I/O shell around the pure datapath (sockets, epoll, GSO sends,
conntrack snapshots). `python -m emunet.agent --state FILE --node NAME` runs one."""
