"""The pieces of ``python -m src.bench``: timed steps, the int8 engine, the cache build."""
