"""ULMFiT's text classifier (Howard & Ruder 2018, sec. 3.3; fastai's ``SentenceEncoder``,
``masked_concat_pool`` and ``PoolingLinearClassifier``): the AWD-LSTM body as an encoder, read in
chunks of ``bptt`` tokens, then concat pooling and a small batch-normalised head.

Documents come as ``tokens [B, T]`` padded at the END and ``lengths [B]`` (real tokens per row).
With padding at the end every output at a real position is independent of the padding (the
backward direction of a bidirectional layer flips each row within its length,
:mod:`src.models.bidirectional`), and pooling masks the padding out, so a document's logits do
not depend on how much padding its batch gave it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.bidirectional import BidirectionalLayer
from src.models.dropout import embedding_dropout


def check_head(lin_sizes: Sequence[int], ps: Sequence[float]) -> None:
    """Raise ValueError unless the head's sizes and dropouts fit: one dropout per linear layer,
    ``len(ps) == len(lin_sizes) + 1``, sizes >= 1, dropouts in [0, 1)."""
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in lin_sizes):
        raise ValueError(f"lin_sizes must be positive integers, got {list(lin_sizes)}")
    if len(ps) != len(lin_sizes) + 1:
        raise ValueError(
            f"ps must have one dropout per linear layer, len(lin_sizes) + 1 = "
            f"{len(lin_sizes) + 1} values, got {list(ps)}"
        )
    if any(not 0.0 <= p < 1.0 for p in ps):
        raise ValueError(f"ps must be probabilities in [0, 1), got {list(ps)}")


def padding_mask(lengths: Tensor, steps: int) -> Tensor:
    """[T, B] True at padding (step t >= lengths[b])."""
    return torch.arange(steps, device=lengths.device).unsqueeze(1) >= lengths.unsqueeze(0)


def masked_concat_pool(outputs: Tensor, lengths: Tensor) -> Tensor:
    """Concat pooling of ``outputs [T, B, E]`` -> ``[B, 3E]``: [the last real token's output,
    the max over real tokens, the mean over real tokens]; padding enters none of the three."""
    lengths = lengths.to(outputs.device)
    pad = padding_mask(lengths, outputs.size(0)).unsqueeze(-1)  # [T, B, 1]
    last = outputs[lengths - 1, torch.arange(outputs.size(1), device=outputs.device)]
    top = outputs.masked_fill(pad, float("-inf")).max(0).values
    mean = outputs.masked_fill(pad, 0.0).sum(0) / lengths.unsqueeze(-1).to(outputs.dtype)
    return torch.cat([last, top, mean], dim=-1)


class SentenceEncoder(nn.Module):
    """The AWD-LSTM body without its decoder, fed ``bptt`` tokens at a time (fastai's
    ``SentenceEncoder``).

    The state is carried from chunk to chunk, detached (truncated back-propagation, as fastai).
    Each chunk draws its own dropout masks (embedding, locked, weight drop: one forward call
    each, as fastai). Every chunk's output is kept for the pooling: the datamodule bounds the
    memory by cutting documents to ``data.max_len`` tokens (fastai instead keeps only the
    outputs of the last ``max_len`` positions, which with padding at the end would drop the
    short rows of a batch). The last layer's output is returned undropped: the head's first
    dropout plays ``dropout_output``'s part.
    """

    def __init__(self, config: AWDLSTMConfig, bptt: int = 72) -> None:
        super().__init__()
        if bptt < 1:
            raise ValueError(f"bptt must be >= 1, got {bptt}")
        body = AWDLSTM(config)  # built as the language model is, so its weights load here
        self.config, self.bptt = config, bptt
        self.embedding = body.embedding
        self.input_dropout = body.input_dropout
        self.layers = body.layers
        self.hidden_dropout = body.hidden_dropout
        self.output_size = body.layer_sizes()[-1][1]

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens [B, T]`` (padded at the end), ``lengths [B]`` -> last layer's outputs
        ``[T, B, E]`` (values at padding are meaningless)."""
        tokens = tokens.t()
        hidden: list = [None] * len(self.layers)
        outputs = []
        for start in range(0, tokens.size(0), self.bptt):
            chunk = tokens[start : start + self.bptt]
            out, hidden = self._chunk(chunk, (lengths - start).clamp(0, chunk.size(0)), hidden)
            hidden = [(h.detach(), c.detach()) for h, c in hidden]
            outputs.append(out)
        return torch.cat(outputs)

    def _chunk(self, tokens: Tensor, lengths: Tensor, hidden: list) -> tuple[Tensor, list]:
        """One chunk through every layer: (last layer's output, new states)."""
        weight = embedding_dropout(self.embedding.weight, self.config.dropout_emb, self.training)
        x = self.input_dropout(F.embedding(tokens, weight))
        new_hidden = []
        for i, (layer, state) in enumerate(zip(self.layers, hidden, strict=True)):
            if isinstance(layer, BidirectionalLayer):
                x, state = layer(x, state, lengths)
            else:
                x, state = layer(x, state)
            new_hidden.append(state)
            if i < len(self.layers) - 1:
                x = self.hidden_dropout(x)
        return x, new_hidden


class PoolingLinearClassifier(nn.Module):
    """Concat pooling, then blocks of BatchNorm1d -> Dropout -> Linear (no bias) -> ReLU, the
    last block without ReLU (fastai's ``PoolingLinearClassifier``): sizes
    ``[3 * E, *lin_sizes, num_classes]``, one dropout ``ps[k]`` per block."""

    def __init__(
        self, in_features: int, lin_sizes: Sequence[int], ps: Sequence[float], num_classes: int
    ) -> None:
        super().__init__()
        check_head(lin_sizes, ps)
        sizes = [3 * in_features, *lin_sizes, num_classes]
        blocks: list[nn.Module] = []
        for k, (n_in, n_out, p) in enumerate(zip(sizes[:-1], sizes[1:], ps, strict=True)):
            blocks += [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out, bias=False)]
            if k < len(sizes) - 2:
                blocks.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*blocks)

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        """Encoder ``outputs [T, B, E]`` and ``lengths [B]`` -> logits ``[B, num_classes]``."""
        return self.layers(masked_concat_pool(outputs, lengths))


class AWDClassifier(nn.Module):
    """Encoder + head. ``embedding``, ``layers`` and ``head`` are the parameter groups of
    fastai's ``awd_lstm_clas_split`` (src/training/param_groups.py)."""

    def __init__(
        self,
        config: AWDLSTMConfig,
        num_classes: int,
        lin_sizes: Sequence[int] = (50,),
        ps: Sequence[float] = (0.4, 0.1),
        bptt: int = 72,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.config = config
        self.encoder = SentenceEncoder(config, bptt)
        self.head = PoolingLinearClassifier(self.encoder.output_size, lin_sizes, ps, num_classes)

    @property
    def embedding(self) -> nn.Embedding:
        return self.encoder.embedding

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens [B, T]`` padded at the end, ``lengths [B]`` -> logits ``[B, num_classes]``."""
        return self.head(self.encoder(tokens, lengths), lengths)
