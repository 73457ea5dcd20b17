"""Integration tests: the host layer and the node agent against the real kernel (root)."""
