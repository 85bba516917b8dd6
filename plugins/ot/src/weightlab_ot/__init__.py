"""weightlab plugin: optimal-transport fusion (Singh & Jaggi 2020) as a matcher."""
