"""The ratings store: engine, ORM models and repository functions."""
