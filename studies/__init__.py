"""Scripted experiments over the library and the harness, run from the checkout: `python -m studies.<name>`."""
