"""The cluster state, pure: types, the plan (IPAM, scheduling, endpoints), its JSON codec, and the
one place that reads and writes the state file."""
