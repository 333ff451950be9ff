"""The ``bnn`` command line: one typer command per file, each a thin wrapper over a library call."""
