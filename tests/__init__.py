"""emunet's tests, by what they need: `unit` (pure, no root), `integration` (root: the host
layer and the agent on real namespaces) and `e2e` (root: the real CLI on a real cluster).

A package, so shared helpers import by their full name (`tests.unit.pipeline_pair`) and never
through sys.path; what a test needs comes from the conftest.py of its directory.
"""
