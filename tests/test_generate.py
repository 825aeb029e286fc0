"""`python -m src.generate`: N tokens, the same text for the same seed, readable joins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.generate import detokenize, generate, prompt_ids, sample
from src.models.awd import AWDLSTM, AWDLSTMConfig
from tests.conftest import CONF_DIR
from tests.test_train_e2e import run_cli


def gen_cfg(ckpt: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("generate", overrides=[f"ckpt_path={ckpt}", *overrides])


def test_sample_is_deterministic_for_a_seed() -> None:
    torch.manual_seed(0)
    model = AWDLSTM(AWDLSTMConfig(vocab_size=20, emb_size=6, hidden_size=8, num_layers=2))
    a = sample(model, [0], 25, 1.0, seed=3)
    assert len(a) == 25 and all(0 <= i < 20 for i in a)
    assert sample(model, [0], 25, 1.0, seed=3) == a
    assert sample(model, [0], 25, 1.0, seed=4) != a
    greedy = sample(model, [0], 10, 0.0, seed=1)
    assert greedy == sample(model, [0], 10, 0.0, seed=2)  # temperature 0: argmax, no sampling


def test_detokenize_word_and_char_level() -> None:
    assert detokenize(["the", "cat", "<eos>", "a", "dog"], False, True) == "the cat\na dog"
    assert detokenize(["a", "_", "c", "a", "t", "<eos>"], True, True) == "a cat\n"  # PTB-char
    assert detokenize(["a", "_", " ", "b"], True, False) == "a_ b"  # raw characters


def test_prompt_ids_map_unknown_words_to_unk() -> None:
    itos = ["<eos>", "<unk>", "the", "cat"]
    assert prompt_ids(None, itos, False, True) == [0]
    assert prompt_ids("the zebra cat", itos, False, True) == [2, 1, 3]
    with pytest.raises(ValueError, match="zebra"):
        prompt_ids("zebra", ["<eos>", "the"], False, True)


def test_generate_from_a_trained_checkpoint(run_tiny) -> None:
    ckpt = run_tiny("trainer.max_epochs=1")["best_checkpoint"]
    text = generate(gen_cfg(ckpt, "tokens=40", "seed=7"))
    assert text == generate(gen_cfg(ckpt, "tokens=40", "seed=7"))
    assert text != generate(gen_cfg(ckpt, "tokens=40", "seed=8"))
    words = text.split()  # word level: <eos> became newlines, the rest are vocabulary words
    assert 0 < len(words) <= 40 and "<eos>" not in words
    prompted = generate(gen_cfg(ckpt, "tokens=5", "prompt='the cat'"))
    assert prompted.startswith("the cat")


@pytest.mark.slow
def test_generate_cli_prints_text(run_tiny, tmp_path: Path) -> None:
    ckpt = run_tiny("trainer.max_epochs=1")["best_checkpoint"]
    args = [f"ckpt_path={ckpt}", "tokens=30", "seed=5", f"hydra.run.dir={tmp_path / 'g'}"]
    first = run_cli("src.generate", *args).stdout
    assert first == run_cli("src.generate", *args).stdout
    assert len(first.split()) > 0
