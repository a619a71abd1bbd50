"""Activities: every call that touches the world (models, tools)."""
