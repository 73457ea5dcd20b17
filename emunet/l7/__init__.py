"""Cilium-style L7 (HTTP) policy: the CiliumNetworkPolicy model, the rule matcher, the per-node
transparent proxy that enforces HTTP rules, and the L7 event log."""
