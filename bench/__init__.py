"""emunet benchmarks: one module per section, run by scripts/bench (`python -m bench.<name>`).

Every section measures emunet and a baseline in the same run, prints figures and ratios, and
writes JSON with `--json PATH`.
"""
