"""Official LAVT / SemiRES checkpoints in and out: ``semires model import-lavt``.

LAVT (yz93/LAVT-RIS, ``train.py:289-299``) and the SemiRES scripts save
``{"model": state_dict, "bert_model": state_dict, "optimizer", "epoch", "args":
argparse.Namespace, "lr_scheduler"}``; for the ``lavt_one`` variant BERT is inside ``model`` as
``text_encoder.*`` (``lib/_utils.py:37``) and there is no ``bert_model``. Such a file is read
with ``torch.load(weights_only=True)`` allowing exactly one extra global, ``argparse.Namespace``;
anything else it would unpickle is refused, naming it.

What the tensors tell is read from them: the Swin sizes (embedding width, blocks and heads per
stage, window from the relative-position table: 529 rows -> 12), the decoder width, the BERT
sizes (vocabulary, width, layers, feed-forward width, positions). What they cannot tell comes
from the stored ``args``: the PWAM heads per stage (``--mha a-b-c-d``, default one each,
``lib/segmentation.py:39-42``), the fusion dropout, the input size; BERT's attention heads come
from the tokenizer folder's ``config.json`` when it has one, else width / 64 (BERT's rule).

Key mapping (LAVT -> semires), one to one except where noted:

==========================================================  ==========================================
``backbone.patch_embed.*``, ``backbone.layers.i.blocks.j.*`` same names (timm layout); LAVT's
                                                            ``relative_position_index`` buffers are
                                                            dropped (timm rebuilds the same index)
``backbone.layers.i.downsample.*``                          ``backbone.layers.{i+1}.downsample.*``
                                                            (timm merges at the start of a stage)
``backbone.layers.i.fusion.vis_project.0``                  ``fusion.i.pwam.vis_project.0`` (1x1
                                                            Conv1d -> Linear: weight squeezed)
``...fusion.image_lang_att.f_query.0 / f_key.0 / f_value.0 / W.0``
                                                            ``fusion.i.pwam.attention.query / key /
                                                            value / out``
``...fusion.project_mm.0``                                  ``fusion.i.pwam.mm_project.0``
``backbone.layers.i.res_gate.{0,2}``                        ``fusion.i.gate.mlp.{0,2}``; the last
                                                            stage's gate feeds nothing in LAVT and
                                                            is dropped
``backbone.norm{i}``                                        ``fusion.i.norm``
``classifier.conv1_4 / bn1_4 / conv2_4 / bn2_4``            ``decoder.blocks.0.{0,1}.{0,1}`` (then
                                                            ``_3`` -> block 1, ``_2`` -> block 2)
``classifier.conv1_1``                                      ``decoder.classifier``
``bert_model.*`` / ``model.text_encoder.*``                 ``text.model.*`` (a pooler is dropped)
==========================================================  ==========================================

:func:`export_lavt_state` is the inverse (the last gate written as zeros, the position-index
buffers rebuilt), so a semires model can be evaluated by LAVT's own ``test.py``.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from semires.errors import CheckpointError
from semires.model.config import ModelConfig
from semires.model.weights import one_line

#: top-level entries of a LAVT / SemiRES checkpoint (``train.py:293-299``)
LAVT_ENTRIES = ("model", "bert_model", "optimizer", "epoch", "args", "lr_scheduler")

_DECODER_LEVELS = {"4": 0, "3": 1, "2": 2}  # classifier.conv*_4 -> decoder.blocks.0, ...


# ---------------------------------------------------------------------------- reading
def read_lavt_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a LAVT / SemiRES checkpoint safely (``weights_only`` + ``argparse.Namespace``)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LAVT checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found:
            raise CheckpointError(
                f"cannot read LAVT checkpoint {path}: not a torch checkpoint "
                f"({_unpickler_detail(exc)})"
            ) from exc
        raise CheckpointError(
            f"{path}: refusing to load the global {found.group(1)}; a LAVT checkpoint holds "
            "only tensors, plain containers and argparse.Namespace"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"cannot read LAVT checkpoint {path}: {one_line(exc)}") from exc
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise CheckpointError(
            f"{path} is not a LAVT / SemiRES checkpoint (expected a dict with a 'model' state dict)"
        )
    extra = sorted(str(k) for k in ck if k not in LAVT_ENTRIES)
    if extra:
        raise CheckpointError(
            f"{path}: unexpected entry {extra[0]!r} in a LAVT checkpoint (expected only "
            f"{', '.join(LAVT_ENTRIES)})"
        )
    if ck.get("args") is not None and not isinstance(ck["args"], argparse.Namespace | dict):
        raise CheckpointError(
            f"{path}: 'args' is a {type(ck['args']).__name__}, expected argparse.Namespace"
        )
    return ck


def _unpickler_detail(exc: BaseException) -> str:
    """The informative line of torch's weights-only error (its first and last lines are advice)."""
    for line in str(exc).splitlines():
        line = (
            line.strip()
            .removeprefix(
                "Please file an issue with the following so that we can make `weights_only=True` compatible with your use case: "
            )
            .strip()
        )
        if line and not line.startswith(
            ("Weights only load failed", "Check the documentation", "WeightsUnpickler error:")
        ):
            return line
    return one_line(exc)


def _strip_module(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop a DistributedDataParallel ``module.`` prefix carried by every key."""
    if state and all(str(k).startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def lavt_args(ck: dict[str, Any]) -> dict[str, Any]:
    """The stored ``args`` as a plain dict (empty when absent)."""
    args = ck.get("args")
    if args is None:
        return {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


def lavt_variant(ck: dict[str, Any]) -> str:
    """``"lavt"`` (a separate ``bert_model``) or ``"lavt_one"`` (BERT inside as text_encoder)."""
    state = _strip_module(ck["model"])
    has_inner = any(k.startswith("text_encoder.") for k in state)
    if "bert_model" in ck and ck["bert_model"] is not None:
        if has_inner:
            raise CheckpointError("the checkpoint has both 'bert_model' and model.text_encoder.*")
        return "lavt"
    if has_inner:
        return "lavt_one"
    raise CheckpointError(
        "no BERT weights: a 'lavt' checkpoint needs 'bert_model', a 'lavt_one' one "
        "model.text_encoder.* keys"
    )


# ---------------------------------------------------------------------------- shapes
def _need(state: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"missing key {key!r} ({what})")
    return state[key]


def infer_swin(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Swin sizes from LAVT's ``backbone.*`` tensors: embed_dim, depths, num_heads, window."""
    proj = _need(state, "backbone.patch_embed.proj.weight", "the patch embedding")
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    block = re.compile(
        r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$"
    )
    depths: dict[int, int] = {}
    heads: dict[int, int] = {}
    rows: set[int] = set()
    for key, value in state.items():
        m = block.match(key)
        if m:
            stage, index = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), index + 1)
            heads[stage] = int(value.shape[1])
            rows.add(int(value.shape[0]))
    if sorted(depths) != [0, 1, 2, 3]:
        raise CheckpointError(
            f"expected 4 Swin stages in backbone.layers.*, found {sorted(depths)}"
        )
    if len(rows) != 1:
        raise CheckpointError(f"relative-position tables of different sizes {sorted(rows)}")
    side = (round(next(iter(rows)) ** 0.5) + 1) // 2
    if (2 * side - 1) ** 2 != next(iter(rows)):
        raise CheckpointError(
            f"a relative-position table of {next(iter(rows))} rows is not (2w-1)^2"
        )
    return {
        "embed_dim": embed_dim,
        "patch_size": patch,
        "depths": [depths[i] for i in range(4)],
        "num_heads": [heads[i] for i in range(4)],
        "window_size": side,
    }


def infer_bert(state: dict[str, torch.Tensor], heads: int | None = None) -> dict[str, Any]:
    """BertConfig fields from BERT's tensors (``heads``: attention heads, else width / 64)."""
    words = _need(state, "embeddings.word_embeddings.weight", "BERT's word embeddings")
    vocab, hidden = (int(n) for n in words.shape)
    layers = {int(m.group(1)) for k in state if (m := re.match(r"^encoder\.layer\.(\d+)\.", k))}
    if not layers or sorted(layers) != list(range(len(layers))):
        raise CheckpointError(f"BERT encoder layers are not 0..N-1: {sorted(layers)}")
    inter = _need(state, "encoder.layer.0.intermediate.dense.weight", "BERT's feed-forward")
    positions = _need(state, "embeddings.position_embeddings.weight", "BERT's positions")
    types = _need(state, "embeddings.token_type_embeddings.weight", "BERT's token types")
    if heads is None:
        if hidden % 64:
            raise CheckpointError(
                f"BERT width {hidden} is not a multiple of 64: give a tokenizer folder with a "
                "config.json that states num_attention_heads"
            )
        heads = hidden // 64
    if hidden % heads:
        raise CheckpointError(f"{heads} attention heads do not divide BERT's width {hidden}")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "intermediate_size": int(inter.shape[0]),
        "max_position_embeddings": int(positions.shape[0]),
        "type_vocab_size": int(types.shape[0]),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    }


def _parse_mha(value: Any) -> int | list[int]:
    """LAVT's ``--mha``: '' -> 1 head per stage, 'a-b-c-d' -> one per stage."""
    if value in (None, ""):
        return 1
    try:
        heads = [int(v) for v in str(value).split("-")]
    except ValueError:
        raise CheckpointError(f"args.mha {value!r} is not of the form a-b-c-d") from None
    if len(heads) != 4 or min(heads) < 1:
        raise CheckpointError(f"args.mha {value!r}: expected four positive head counts a-b-c-d")
    return heads[0] if len(set(heads)) == 1 else heads


# ---------------------------------------------------------------------------- mapping
def _backbone_key(key: str) -> str | None:
    """A LAVT ``backbone.*`` key -> the semires key (None: dropped)."""
    rest = key[len("backbone.") :]
    if rest.startswith("patch_embed."):
        return key
    m = re.match(r"^norm(\d+)\.(.+)$", rest)
    if m:
        return f"fusion.{m.group(1)}.norm.{m.group(2)}"
    m = re.match(r"^layers\.(\d+)\.(.+)$", rest)
    if not m:
        return "?"
    stage, tail = int(m.group(1)), m.group(2)
    if tail.startswith("blocks."):
        return None if tail.endswith("relative_position_index") else key
    if tail.startswith("downsample."):
        return f"backbone.layers.{stage + 1}.{tail}"
    if tail.startswith("res_gate."):
        return None if stage == 3 else f"fusion.{stage}.gate.mlp.{tail[len('res_gate.') :]}"
    fusion = {
        "fusion.vis_project.0.": "pwam.vis_project.0.",
        "fusion.image_lang_att.f_query.0.": "pwam.attention.query.",
        "fusion.image_lang_att.f_key.0.": "pwam.attention.key.",
        "fusion.image_lang_att.f_value.0.": "pwam.attention.value.",
        "fusion.image_lang_att.W.0.": "pwam.attention.out.",
        "fusion.project_mm.0.": "pwam.mm_project.0.",
    }
    for old, new in fusion.items():
        if tail.startswith(old):
            return f"fusion.{stage}.{new}{tail[len(old) :]}"
    return "?"


def _decoder_key(key: str) -> str:
    m = re.match(r"^classifier\.(conv|bn)([12])_([1234])\.(.+)$", key)
    if not m:
        return "?"
    kind, which, level, tail = m.groups()
    if level == "1":
        return f"decoder.classifier.{tail}" if kind == "conv" and which == "1" else "?"
    block = _DECODER_LEVELS[level]
    return f"decoder.blocks.{block}.{int(which) - 1}.{0 if kind == 'conv' else 1}.{tail}"


def lavt_to_semires_state(
    model_state: dict[str, torch.Tensor], bert_state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map LAVT's model (+ BERT) state dicts to a semires ``RESModel`` state dict."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in model_state.items():
        if key.startswith("backbone."):
            new = _backbone_key(key)
        elif key.startswith("classifier."):
            new = _decoder_key(key)
        elif key.startswith("text_encoder."):
            continue  # lavt_one: handled with the BERT weights
        else:
            new = "?"
        if new == "?":
            unknown.append(key)
        elif new is not None:
            if new.startswith("fusion.") and ".pwam." in new and value.dim() == 3:
                value = value[..., 0]  # Conv1d(k=1) -> Linear
            out[new] = value
    if unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise CheckpointError(f"{len(unknown)} keys that are not LAVT's: {shown}")
    for key, value in bert_state.items():
        if key.startswith("pooler.") or key == "embeddings.position_ids":
            continue
        out[f"text.model.{key}"] = value
    return out


def export_lavt_state(model: torch.nn.Module, variant: str = "lavt") -> dict[str, Any]:
    """A semires ``RESModel`` as LAVT's ``{"model", "bert_model"}`` state dicts (``lavt``) or
    ``{"model"}`` with ``text_encoder.*`` inside (``lavt_one``), loadable by LAVT's code."""
    state = model.state_dict()
    lavt: dict[str, torch.Tensor] = {}
    bert: dict[str, torch.Tensor] = {}
    blocks = {b: r for r, b in _DECODER_LEVELS.items()}
    for key, value in state.items():
        if key.startswith("text.model."):
            bert[key[len("text.model.") :]] = value
        elif key.startswith("backbone."):
            m = re.match(r"^backbone\.layers\.(\d+)\.downsample\.(.+)$", key)
            lavt[f"backbone.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else key] = (
                value
            )
        elif key.startswith("fusion."):
            stage, tail = key.split(".", 2)[1:]
            if tail.startswith("norm."):
                lavt[f"backbone.norm{stage}.{tail[len('norm.') :]}"] = value
            elif tail.startswith("gate.mlp."):
                lavt[f"backbone.layers.{stage}.res_gate.{tail[len('gate.mlp.') :]}"] = value
            else:
                names = {
                    "pwam.vis_project.0.": "fusion.vis_project.0.",
                    "pwam.attention.query.": "fusion.image_lang_att.f_query.0.",
                    "pwam.attention.key.": "fusion.image_lang_att.f_key.0.",
                    "pwam.attention.value.": "fusion.image_lang_att.f_value.0.",
                    "pwam.attention.out.": "fusion.image_lang_att.W.0.",
                    "pwam.mm_project.0.": "fusion.project_mm.0.",
                }
                old = next((o for o in names if tail.startswith(o)), None)
                if old is None:
                    raise CheckpointError(f"{key} has no LAVT counterpart (a semires-only option)")
                weight = value[..., None] if value.dim() == 2 else value
                lavt[f"backbone.layers.{stage}.{names[old]}{tail[len(old) :]}"] = weight
        elif key.startswith("decoder.classifier."):
            lavt[f"classifier.conv1_1.{key[len('decoder.classifier.') :]}"] = value
        elif key.startswith("decoder.blocks."):
            block, which, kind, tail = key[len("decoder.blocks.") :].split(".", 3)
            name = "conv" if kind == "0" else "bn"
            lavt[f"classifier.{name}{int(which) + 1}_{blocks[int(block)]}.{tail}"] = value
        else:
            raise CheckpointError(f"{key} has no LAVT counterpart")
    # LAVT's extra tensors: the last stage's gate (unused) and the position-index buffers
    last = model.backbone.channels[-1]
    for i in (0, 2):
        lavt[f"backbone.layers.3.res_gate.{i}.weight"] = torch.zeros(last, last)
    for s, stage in enumerate(model.backbone.layers):
        for j, blk in enumerate(stage.blocks):
            index = blk.attn.relative_position_index.clone()
            lavt[f"backbone.layers.{s}.blocks.{j}.attn.relative_position_index"] = index
    if variant == "lavt_one":
        lavt.update({f"text_encoder.{k}": v for k, v in bert.items()})
        return {"model": lavt}
    if variant != "lavt":
        raise ValueError(f"variant must be 'lavt' or 'lavt_one', got {variant!r}")
    return {"model": lavt, "bert_model": bert}


# ---------------------------------------------------------------------------- import
def _tokenizer_and_config(
    spec: str | None, args: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The tokenizer's stored vocabulary, the folder's config.json (or {}), and the source."""
    import json

    from semires.model.text import load_tokenizer, tokenizer_data

    source = spec or str(args.get("bert_tokenizer") or "bert-base-uncased")
    tok = load_tokenizer(source)
    config: dict[str, Any] = {}
    path = Path(source).expanduser() / "config.json"
    if path.is_file():
        try:
            config = dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            config = {}
    return tokenizer_data(tok), config, source


def lavt_model_config(
    ck: dict[str, Any], bert_state: dict[str, torch.Tensor], bert_config: dict[str, Any]
) -> ModelConfig:
    """The semires ``lavt-swin-b``-family config that computes what the checkpoint's LAVT did."""
    from semires.model.registry import get_model_config

    state = _strip_module(ck["model"])
    args = lavt_args(ck)
    swin = infer_swin(state)
    if swin["patch_size"] != 4:
        raise CheckpointError(f"Swin patch size {swin['patch_size']}: LAVT uses 4")
    base = get_model_config("lavt-swin-b")
    backbone_kwargs: dict[str, Any] = {"drop_path_rate": 0.3}
    swin_b = {
        "embed_dim": 128,
        "depths": [2, 2, 18, 2],
        "num_heads": [4, 8, 16, 32],
        "window_size": 12,
    }
    if any(swin[k] != v for k, v in swin_b.items()):
        backbone_kwargs.update({k: swin[k] for k in swin_b})
    dec = _need(state, "classifier.conv1_4.weight", "the decoder")
    width = int(_need(bert_state, "embeddings.word_embeddings.weight", "BERT").shape[1])
    heads = bert_config.get("num_attention_heads")
    # a config.json next to the vocabulary tells the heads when it describes this BERT's width
    bert = infer_bert(
        bert_state, int(heads) if heads and bert_config.get("hidden_size") == width else None
    )
    layers = bert["num_hidden_layers"]
    return base.replace(
        backbone_kwargs=backbone_kwargs,
        backbone_weights=None,
        img_size=int(args.get("img_size") or 480),
        text_encoder="bert-config",
        text_kwargs=bert,
        tokenizer="embedded",
        text_train_layers=min(10, layers),
        fusion_heads=_parse_mha(args.get("mha")),
        fusion_dropout=float(args.get("fusion_drop") or 0.0),
        decoder_dim=int(dec.shape[0]),
    )


def import_lavt(
    path: str | Path, out: str | Path, *, tokenizer: str | None = None
) -> dict[str, Any]:
    """Convert a LAVT / SemiRES checkpoint into a semires checkpoint of the ``lavt-swin-b``
    family (written atomically); returns a summary (variant, sizes, keys)."""
    from semires.model import build_model
    from semires.model.weights import load_state_strict
    from semires.runtime.checkpoint import save_checkpoint

    ck = read_lavt_checkpoint(path)
    variant = lavt_variant(ck)
    model_state = _strip_module(ck["model"])
    if variant == "lavt":
        bert_state = _strip_module(ck["bert_model"])
    else:
        bert_state = {
            k[len("text_encoder.") :]: v
            for k, v in model_state.items()
            if k.startswith("text_encoder.")
        }
    try:
        embedded, bert_config, source = _tokenizer_and_config(tokenizer, lavt_args(ck))
        cfg = lavt_model_config(ck, bert_state, bert_config)
        state = lavt_to_semires_state(model_state, bert_state)
        model = build_model(cfg, embedded_tokenizer=embedded)
        load_state_strict(model, state, "the converted weights do not fit the LAVT model")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    args = {
        k: v if isinstance(v, int | float | str | bool | type(None)) else str(v)
        for k, v in lavt_args(ck).items()
    }
    save_checkpoint(
        out,
        {
            "model_config": cfg.to_dict(),
            "model": model.state_dict(),
            "text_from_source": False,
            "config": {},
            "tokenizer": embedded,
            "imported": {
                "from": str(path),
                "variant": variant,
                "epoch": ck.get("epoch"),
                "args": args,
                "tokenizer": source,
            },
        },
    )
    return {
        "variant": variant,
        "swin": infer_swin(model_state),
        "bert": cfg.text_kwargs,
        "fusion_heads": cfg.fusion_heads,
        "decoder_dim": cfg.decoder_dim,
        "img_size": cfg.img_size,
        "epoch": ck.get("epoch"),
        "tensors": len(state),
        "tokenizer": source,
    }
