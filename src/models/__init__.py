"""The language models; plain PyTorch, no Lightning or Hydra."""

from src.models.awd import AWDLSTM, AWDLSTMConfig, LMOutput
from src.models.cells import lstm_step
from src.models.dropout import EmbeddingDropout, LockedDropout, WeightDrop, embedding_dropout
from src.models.recurrent import (
    LAYERS,
    CuDNNLSTMLayer,
    LoopLSTMLayer,
    build_recurrent_layer,
    register_runner,
)
from src.models.regularizers import (
    activation_regularization,
    temporal_activation_regularization,
)

__all__ = [
    "AWDLSTM",
    "LAYERS",
    "AWDLSTMConfig",
    "CuDNNLSTMLayer",
    "EmbeddingDropout",
    "LMOutput",
    "LockedDropout",
    "LoopLSTMLayer",
    "WeightDrop",
    "activation_regularization",
    "build_recurrent_layer",
    "embedding_dropout",
    "lstm_step",
    "register_runner",
    "temporal_activation_regularization",
]
