"""Real plugin modules used by the plugin-system tests (each is one kind of plugin)."""
