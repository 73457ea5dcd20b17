"""A running cluster: `up`/`down`, the supervisor and its controllers (Deployments, probes,
node power, events), the pods' workloads, and state changes (`apply`/`delete`)."""
