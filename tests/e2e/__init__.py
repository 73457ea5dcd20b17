"""End-to-end tests: the real `emunet` CLI on real namespaces, checked with real clients."""
