"""Run trained float models outside this package: ONNX export (``onnx_export``) and scoring
with ONNX Runtime (``onnx_runtime``). Needs the ``deploy`` extra (onnx, onnxruntime); the
integer model's standalone C runtime is :mod:`src.quant.integer.runtime_export`."""
