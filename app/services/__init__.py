"""Services: plain functions used by the API, the CLI and the worker."""
