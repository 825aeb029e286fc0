"""Quantization: 8-bit quantization-aware training and the integer-only engine.

``config`` (the ``quant`` group) and ``scheme`` (the arithmetic both halves share) sit here;
``qat/`` transforms a float model for quantization-aware training (observers, fake quantizers,
QAT layers, ``prepare``, calibration, the ``QATSchedule`` callback); ``integer/`` is the
integer-only engine (fixed point, tables, layers, C kernels, conversion from a QAT model, the
exported file). ``integer`` reads QAT models; ``qat`` never imports ``integer``. Scheme and
equations: docs/quantization.md.
"""
