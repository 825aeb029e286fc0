"""BPTT batching: streams, variable lengths, window coverage, rank shards."""

import numpy as np
import pytest
import torch

from src.data.bptt import Window, WindowIterable, batchify, sample_seq_len


def positions(b: int, n: int) -> np.ndarray:
    """Streams whose values are their own flat positions, so windows can be traced back."""
    return np.arange(b * n, dtype=np.int32).reshape(b, n)


def test_batchify_cuts_contiguous_streams_and_drops_the_tail():
    ids = np.arange(23, dtype=np.int32)
    streams = batchify(ids, 4)
    assert streams.shape == (4, 5)
    assert streams[1].tolist() == [5, 6, 7, 8, 9]  # stream j = ids[j*N:(j+1)*N]
    assert np.shares_memory(streams, ids)


def test_batchify_rank_shards_concatenate_to_the_full_batch():
    ids = np.arange(1000, dtype=np.int32)
    full = batchify(ids, 6)
    shards = [batchify(ids, 6, rank=r, world_size=3) for r in range(3)]
    assert all(s.shape == (2, full.shape[1]) for s in shards)
    np.testing.assert_array_equal(np.concatenate(shards), full)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "positive"),
        ({"batch_size": 4, "world_size": 3}, "divisible"),
        ({"batch_size": 4, "rank": 2, "world_size": 2}, "rank"),
        ({"batch_size": 6}, "at least 2 tokens"),
    ],
)
def test_batchify_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        batchify(np.arange(11), **kwargs)


def test_sample_seq_len_distribution():
    rng = np.random.default_rng(0)
    bptt, n = 70, 40_000
    lens = np.array([sample_seq_len(rng, bptt) for _ in range(n)])
    expected = 0.95 * bptt + 0.05 * bptt / 2 - 0.5  # int() truncates N(base, 5) by ~0.5
    assert abs(lens.mean() - expected) < 0.3
    half_share = (lens < 0.75 * bptt).mean()  # N(35, 5) vs N(70, 5) separate cleanly
    assert abs(half_share - 0.05) < 0.005
    assert abs(lens[lens >= 0.75 * bptt].std() - 5.0) < 0.2
    small = [sample_seq_len(rng, 10) for _ in range(2000)]
    assert min(small) == 5


def test_sample_seq_len_knobs():
    rng = np.random.default_rng(1)
    assert {sample_seq_len(rng, 50, p=1.0, std=0.0) for _ in range(100)} == {50}
    assert {sample_seq_len(rng, 50, p=0.0, std=0.0) for _ in range(100)} == {25}
    assert {sample_seq_len(rng, 8, p=1.0, std=0.0, min_len=12) for _ in range(10)} == {12}


@pytest.mark.parametrize("variable", [False, True])
def test_one_pass_predicts_every_target_once_in_order(variable):
    B, N, bptt = 3, 1004, 20
    streams = positions(B, N)
    windows = list(WindowIterable(streams, bptt, variable=variable, seed=7))
    assert all(isinstance(w, Window) for w in windows)
    inputs = torch.cat([w.inputs for w in windows])  # (N - 1, B)
    targets = torch.cat([w.targets for w in windows])
    np.testing.assert_array_equal(targets.numpy().T, streams[:, 1:])
    np.testing.assert_array_equal(inputs.numpy().T, streams[:, :-1])
    lens = [w.inputs.shape[0] for w in windows]
    assert sum(lens) == N - 1
    if variable:
        assert len(set(lens)) > 3 and min(lens[:-1]) >= 5
    else:
        assert set(lens[:-1]) == {bptt} and lens[-1] == (N - 1) % bptt


def test_window_tensors_are_time_major_int64():
    w = next(iter(WindowIterable(positions(4, 50), 10)))
    assert w.inputs.shape == w.targets.shape == (10, 4)
    assert w.inputs.dtype == w.targets.dtype == torch.int64
    assert w.inputs.is_contiguous() and w.targets.is_contiguous()
    assert w.lr_scale == 1.0


def test_lr_scale_is_length_over_bptt_for_variable_windows():
    windows = list(WindowIterable(positions(2, 3000), 70, variable=True, seed=3))
    for w in windows:
        assert w.lr_scale == pytest.approx(w.inputs.shape[0] / 70)


def test_variable_lengths_depend_on_seed_and_epoch_only():
    data = WindowIterable(positions(2, 5000), 70, variable=True, seed=141)
    epoch0 = list(data.seq_lens())
    assert list(data.seq_lens()) == epoch0
    data.set_epoch(1)
    assert list(data.seq_lens()) != epoch0
    other = WindowIterable(positions(8, 5000), 70, variable=True, seed=141)
    other.set_epoch(1)
    assert list(other.seq_lens()) == list(data.seq_lens())
    assert data.num_windows() == len(list(data))


def test_epoch_fn_is_read_when_iteration_starts():
    epoch = {"now": 0}
    data = WindowIterable(positions(2, 5000), 70, variable=True, epoch_fn=lambda: epoch["now"])
    first = [w.inputs.shape[0] for w in data]
    epoch["now"] = 4
    fourth = [w.inputs.shape[0] for w in data]
    assert data.epoch == 4 and first != fourth
    reference = WindowIterable(positions(2, 5000), 70, variable=True)
    reference.set_epoch(4)
    assert list(reference.seq_lens()) == fourth


def test_rank_shards_concatenated_equal_the_single_process_batch():
    ids = np.arange(12_345, dtype=np.int32)
    single = list(WindowIterable(batchify(ids, 8), 35, variable=True, seed=5))
    ranks = [
        list(WindowIterable(batchify(ids, 8, r, 4), 35, variable=True, seed=5)) for r in range(4)
    ]
    assert all(len(r) == len(single) for r in ranks)
    for k, whole in enumerate(single):
        parts = [r[k] for r in ranks]
        assert torch.equal(torch.cat([p.inputs for p in parts], dim=1), whole.inputs)
        assert torch.equal(torch.cat([p.targets for p in parts], dim=1), whole.targets)
        assert {p.lr_scale for p in parts} == {whole.lr_scale}


def test_windows_read_from_a_read_only_memmap(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(200, dtype="<i4").tofile(path)
    ids = np.memmap(path, dtype="<i4", mode="r")
    windows = list(WindowIterable(batchify(ids, 4), 7))
    assert torch.cat([w.targets for w in windows]).T.tolist() == batchify(ids, 4)[:, 1:].tolist()


def test_window_iterable_rejects_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        WindowIterable(np.zeros((3, 1), dtype=np.int32), 5)
    with pytest.raises(ValueError, match="bptt"):
        WindowIterable(positions(2, 10), 0)
