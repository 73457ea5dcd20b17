"""Unit tests: pure, no root, no kernel objects; `pytest -m unit` runs them alone."""
