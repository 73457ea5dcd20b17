"""Kubernetes NetworkPolicy for emunet: the model, identities, compilation and verdicts.

`model` holds the API objects, `verdict` the compiled per-node tables and the `Verdict` event
the datapath reports (the integration point for L7 policy, see its docstring), `compile` turns
the cluster state into those tables.
"""
