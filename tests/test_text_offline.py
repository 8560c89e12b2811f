"""Text encoders without a network: a hub name that is not cached fails at once, in one line
(issue 30), and the tokenizer does not print transformers' long-sequence warning."""

from __future__ import annotations

import time

import pytest

from semires.errors import CheckpointError, SemiresError
from semires.model import build_model
from semires.model.text import build_text_encoder, load_tokenizer

#: a hub-style name that no cache holds
MISSING = "semires-tests/no-such-model"


def _check_fast_one_line(call, what: str, key: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        call()
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 10, f"took {elapsed:.1f} s (transformers' retries take ~50 s)"
    assert "\n" not in message
    assert f"{what} {MISSING!r} was not found locally" in message
    assert f"model.overrides.{key}=./no-such-model" in message  # how to pass a local folder
    assert isinstance(info.value, SemiresError) and info.value.exit_code == 2  # CLI: exit 2


@pytest.mark.parametrize("what", ["text encoder", "tokenizer"])
def test_offline_hub_name_fails_at_once(monkeypatch, what):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if what == "text encoder":
        _check_fast_one_line(lambda: build_text_encoder(MISSING, {}, 20), what, "text_encoder")
    else:
        _check_fast_one_line(lambda: load_tokenizer(MISSING), what, "tokenizer")


def test_unreachable_hub_fails_at_once(monkeypatch):
    """Without HF_HUB_OFFLINE a hub that does not answer is detected before transformers'
    retries (port 9 of the loopback: the connection is refused at once)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    _check_fast_one_line(
        lambda: build_text_encoder(MISSING, {}, 20), "text encoder", "text_encoder"
    )
    with pytest.raises(CheckpointError, match=r"the hub \(http://127.0.0.1:9\) cannot be reached"):
        load_tokenizer(MISSING)


def test_long_sentence_prints_no_transformers_warning(capfd):
    """A sentence beyond BERT's 512 positions: our one UserWarning, not transformers' log line."""
    model = build_model("test-lavt")  # the packaged bert-base-uncased vocabulary, 512 positions
    assert model.text.tokenizer.model_max_length == 512
    long = " ".join(["red"] * 600)
    with pytest.warns(UserWarning, match="longer than 20 tokens were truncated"):
        tokens = model.tokenize([long, "the man"])
    assert tokens["input_ids"].shape == (2, 20)
    captured = capfd.readouterr()
    assert "Token indices sequence length" not in captured.err + captured.out
