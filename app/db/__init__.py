"""The store: engine, tables, and the query functions (the only place SQL is written)."""
