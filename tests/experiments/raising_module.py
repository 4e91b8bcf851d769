"""A user's module that raises while it is imported (named by import path in a config)."""

raise RuntimeError("broken on import")
