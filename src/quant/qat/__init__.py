"""Quantization-aware training: ``prepare`` a float model (here), train it with the
``QATSchedule`` callback (:mod:`.schedule`, the one module of this package that imports
Lightning: the integer engine reads QAT layers without pulling Lightning in)."""

from .prepare import is_prepared, prepare

__all__ = ["is_prepared", "prepare"]
