"""The host layer: network namespaces, veths, addresses, routes, tc and nftables, the manifest of
what was made, and recorded processes. `netlink` is the only module that imports pyroute2."""
