"""The `emunet` command line: one module per verb group, `main` parses and dispatches."""
