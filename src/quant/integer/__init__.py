"""The integer-only engine: int8 GEMMs, int16 gates and cell state, lookup-table activations.

``convert`` builds it from a trained QAT model, ``export`` writes and reads the file, ``engine``
and ``engine_mlstm`` hold the layers, ``kernel*`` their fused C recurrences. Imports no
Lightning (an import-linter contract checks it).
"""
