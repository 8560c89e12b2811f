"""LAVT fidelity (docs/model.md) and LAVT / SemiRES checkpoints (semires model import-lavt).

Each fidelity item is checked against a reference written here from LAVT's description (the
original code is GPL-3.0 and not in this repository): Swin's pad-then-shift windows at the
stage-4 size of a 480 px input, the decoder's width and upsampling, BERT's trained layers and
LAVT's weight-decay groups, tokenisation of a long expression. The conversion is checked on
small random models in LAVT's checkpoint layout (both variants, round trip, bad files).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semires.cli import main
from semires.errors import CheckpointError, ConfigError
from semires.model import build_model, get_model_config
from semires.runtime.checkpoint import load_model_checkpoint
from semires.runtime.lavt_import import export_lavt_state, import_lavt

LONG = (
    "the brown dog sitting on the wooden bench next to the tall man who is holding a "
    "blue umbrella over his head near the parked white car in the rain"
)  # 30 words


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lavt_model():
    torch.manual_seed(0)
    model = build_model("test-lavt").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the decoder mapping matters
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    return model


def _lavt_file(model, path: Path, variant: str = "lavt", **args) -> Path:
    ck = export_lavt_state(model, variant)
    defaults = {"model": variant, "mha": "", "fusion_drop": 0.0, "img_size": 64}
    ck.update(
        epoch=7,
        args=argparse.Namespace(**{**defaults, **args}),
        optimizer={"state": {}, "param_groups": []},
        lr_scheduler={"last_epoch": 3, "lr_lambdas": [None]},
    )
    torch.save(ck, path)
    return path


# --- Swin: LAVT's window order -------------------------------------------------------------


def _reference_shifted_block(block, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """A Swin block as LAVT computes it, written out: norm1, zero-pad bottom/right to whole
    windows, roll by -shift, windowed attention with the relative-position bias and the shift
    mask built on the PADDED grid (-100 between regions), un-roll, crop, residual, MLP."""
    b, h, w, c = x.shape
    y = block.norm1(x)
    ph, pw = (window - h % window) % window, (window - w % window) % window
    y = F.pad(y, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    y = torch.roll(y, (-shift, -shift), (1, 2))
    region = torch.zeros(hp, wp)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(cuts):
        for j, ws in enumerate(cuts):
            region[hs, ws] = 3 * i + j

    def windows(t):
        t = t.reshape(t.shape[0], hp // window, window, wp // window, window, -1)
        return t.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, t.shape[-1])

    tokens = windows(y)
    lab = windows(region[None, :, :, None])[..., 0]  # [nW, N]
    mask = torch.where(lab[:, :, None] == lab[:, None, :], 0.0, -100.0)
    attn = block.attn
    heads = attn.num_heads
    qkv = (
        attn.qkv(tokens)
        .reshape(tokens.shape[0], window * window, 3, heads, -1)
        .permute(2, 0, 3, 1, 4)
    )
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    logits = q @ k.transpose(-1, -2) + attn._get_rel_pos_bias()
    logits = logits + mask.repeat(b, 1, 1)[:, None]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(tokens.shape[0], window * window, c)
    out = attn.proj(out).reshape(b, hp // window, wp // window, window, window, c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    out = torch.roll(out, (shift, shift), (1, 2))[:, :h, :w]
    x = x + out
    return x + block.mlp(block.norm2(x))


def test_swin_stage4_at_480_pads_before_the_shift():
    torch.manual_seed(0)
    cfg = get_model_config("lavt-swin-b-random").replace(
        backbone_kwargs={
            "embed_dim": 16,
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 1, 2, 2],
            "drop_path_rate": 0.0,
        },
        text_kwargs={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1},
        text_train_layers=None,
        decoder_dim=64,
    )
    model = build_model(cfg).eval()
    block = model.backbone.layers[3].blocks[1]  # the shifted block of stage 4
    assert tuple(block.window_size) == (12, 12) and tuple(block.shift_size) == (6, 6)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2, 15, 15, block.dim)  # 480 px / 32
        ours = block(x)
        reference = _reference_shifted_block(block, x, 12, 6)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        # timm's own order (roll the 15x15 map, then pad) gives other outputs: the test can fail
        timm_block = type(block).__mro__[1]
        block.__class__ = timm_block
        try:
            other = block(x)
        finally:
            block.__class__ = type(model.backbone.layers[3].blocks[0])
        assert (other - reference).abs().max() > 1e-2
        # the whole backbone runs at 480 and gives stride-32 maps of 15x15
        feats = model.backbone.run_stage(0, model.backbone.embed(torch.randn(1, 3, 480, 480)))
        assert feats.shape[1:3] == (120, 120)


def test_small_maps_keep_full_windows_and_shift():
    model = build_model("test-lavt")  # 64 px: stage 4 is 2x2, window 4
    last = model.backbone.layers[3].blocks[0]
    shifted = model.backbone.layers[2].blocks[1]
    assert tuple(last.window_size) == (4, 4)  # timm alone would shrink it to 2 and not shift
    assert tuple(shifted.shift_size) == (2, 2)
    out = model(torch.randn(2, 3, 64, 64), **model.tokenize(["a", "b c"]))
    assert out.shape == (2, 2, 64, 64) and torch.isfinite(out).all()


# --- decoder ---------------------------------------------------------------------------------


def test_decoder_width_and_upsampling_are_lavts(lavt_model):
    paper = get_model_config("lavt-swin-b")
    assert paper.decoder_dim == 512 == 8 * 128 // 2 and paper.align_corners
    dec = lavt_model.decoder
    first = dec.blocks[0][0][0]
    c = lavt_model.backbone.channels
    assert first.in_channels == c[3] + c[2] and first.out_channels == c[3] // 2
    assert all(block[i][0].bias is None for block in dec.blocks for i in (0, 1))
    assert dec.classifier.bias is not None and dec.classifier.kernel_size == (1, 1)
    torch.manual_seed(3)
    feats = [torch.randn(1, ch, 16 // 2**i, 16 // 2**i) for i, ch in enumerate(c)]
    with torch.no_grad():
        x = feats[3]
        for block, skip in zip(dec.blocks, reversed(feats[:3]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = block(torch.cat([x, skip], 1))
        torch.testing.assert_close(dec(feats), dec.classifier(x))
        # the final logits are upsampled with align_corners=True as well
        images = torch.randn(1, 3, 64, 64)
        tok = lavt_model.tokenize(["the man"])
        full = lavt_model(images, **tok)
        low = lavt_model.decoder(_decoder_inputs(lavt_model, images, tok))
        up = F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=True)
        torch.testing.assert_close(full, up)


def _decoder_inputs(model, images, tok):
    feats, x = [], model.backbone.embed(images)
    words = model.encode_text(tok["input_ids"], tok["attention_mask"])
    for i, fusion in enumerate(model.fusion):
        x = model.backbone.run_stage(i, x)
        x, feat = fusion(x, words, tok["attention_mask"])
        feats.append(feat.permute(0, 3, 1, 2))
    return feats


# --- text: trained layers, tokenisation -----------------------------------------------------


def test_bert_trained_layers_and_lavt_decay_groups():
    torch.manual_seed(0)
    model = build_model(
        "test-lavt",
        text_kwargs={
            "hidden_size": 64,
            "num_hidden_layers": 12,
            "num_attention_heads": 1,
            "intermediate_size": 64,
        },
        text_train_layers=10,
    )
    trainable = {n for n, p in model.text.model.named_parameters() if p.requires_grad}
    layers = {int(n.split(".")[2]) for n in trainable}
    assert layers == set(range(10))  # encoder.layer.0..9 only, as LAVT's optimiser
    assert not any(n.startswith("embeddings.") for n in trainable)
    groups = model.param_groups(1e-2, rule="lavt")
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[0]["params"]}
    decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 1e-2
    assert not no_decay & decay
    assert no_decay | decay == {n for n, p in model.named_parameters() if p.requires_grad}
    # no decay: backbone norms and position tables, and LAVT's output norms (backbone.norm{i})
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "backbone.patch_embed.norm.weight" in no_decay and "fusion.2.norm.bias" in no_decay
    # decayed: biases, BERT (LayerNorm included), the decoder's BatchNorm
    assert "backbone.layers.0.blocks.0.attn.qkv.bias" in decay
    assert "text.model.encoder.layer.0.output.LayerNorm.weight" in decay
    assert "decoder.blocks.0.0.1.weight" in decay
    default = {names[id(p)] for p in model.param_groups(1e-2)[0]["params"]}
    assert "backbone.layers.0.blocks.0.attn.qkv.bias" in default  # ours excludes biases


def test_tokenisation_of_a_long_expression_is_lavts():
    model = build_model("test-lavt")
    assert len(LONG.split()) == 30
    ids = model.text.tokenizer(LONG)["input_ids"]  # [CLS] ... [SEP], longer than 20
    assert len(ids) > 20
    with pytest.warns(UserWarning, match="truncated"):
        tok = model.tokenize([LONG, "man"])
    assert tok["input_ids"][0].tolist() == ids[:20]  # cut: the [SEP] is lost
    assert tok["input_ids"][0, -1].item() != 102 and tok["attention_mask"][0].tolist() == [1] * 20
    assert tok["input_ids"][1, :3].tolist() == [101, 2158, 102]
    assert tok["input_ids"][1, 3:].tolist() == [0] * 17 and tok["attention_mask"][1].sum() == 3
    keep = build_model("test-lavt", truncation="keep_sep")
    with pytest.warns(UserWarning, match="truncated"):
        kept = keep.tokenize([LONG])["input_ids"][0]
    assert kept[-1].item() == 102 and kept[:19].tolist() == ids[:19]


def test_per_stage_heads_and_key_scale():
    model = build_model("test-lavt", fusion_heads=[1, 2, 2, 4])
    assert [f.pwam.attention.heads for f in model.fusion] == [1, 2, 2, 4]
    att = model.fusion[3].pwam.attention
    assert att.scale == pytest.approx(128**-0.5)  # the whole key width, whatever the heads
    with pytest.raises(ConfigError, match="fusion_heads"):
        build_model("test-lavt", fusion_heads=[1, 2])


# --- conversion ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["lavt", "lavt_one"])
def test_import_round_trip(lavt_model, variant, tmp_path):
    path = _lavt_file(lavt_model, tmp_path / f"{variant}.pth", variant)
    summary = import_lavt(path, tmp_path / "out.pt", tokenizer="minilm")
    assert summary["variant"] == variant and summary["epoch"] == 7
    assert summary["bert"]["num_hidden_layers"] == 2 and summary["swin"]["window_size"] == 4
    model, ck = load_model_checkpoint(tmp_path / "out.pt")
    assert ck["imported"]["variant"] == variant and ck["model_config"]["tokenizer"] == "embedded"
    assert model.config.text_encoder == "bert-config" and model.config.decoder_dim == 64
    ours = lavt_model.state_dict()
    theirs = model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    images = torch.randn(2, 3, 64, 64)
    sents = ["the man on the left", LONG]
    model.eval()
    with torch.no_grad(), pytest.warns(UserWarning):
        a = lavt_model(images, **lavt_model.tokenize(sents))
        b = model(images, **model.tokenize(sents))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and back: exporting the imported model gives LAVT's tensors again
    again = export_lavt_state(model, variant)
    original = torch.load(path, weights_only=False)
    for part in again:
        assert again[part].keys() == original[part].keys()
        assert all(torch.equal(again[part][k], original[part][k]) for k in again[part])


def test_import_reads_heads_from_args_and_the_tokenizer_config(lavt_model, tmp_path):
    path = _lavt_file(lavt_model, tmp_path / "mha.pth", mha="1-1-2-2", fusion_drop=0.1, img_size=96)
    summary = import_lavt(path, tmp_path / "out.pt", tokenizer="minilm")
    assert summary["fusion_heads"] == [1, 1, 2, 2] and summary["img_size"] == 96
    model, _ = load_model_checkpoint(tmp_path / "out.pt")
    assert model.config.fusion_dropout == pytest.approx(0.1)
    # a vocabulary folder with a config.json of this BERT's width gives its attention heads
    folder = tmp_path / "vocab"
    folder.mkdir()
    from semires.model.text import load_tokenizer

    vocab = sorted(load_tokenizer("minilm").get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    (folder / "config.json").write_text('{"hidden_size": 64, "num_attention_heads": 4}')
    summary = import_lavt(path, tmp_path / "out2.pt", tokenizer=str(folder))
    assert summary["bert"]["num_attention_heads"] == 4


class _Evil:
    def __reduce__(self):
        return (print, ("owned",))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ck, p: p.write_bytes(b"not a checkpoint"), "cannot read LAVT checkpoint"),
        (lambda ck, p: torch.save([1, 2], p), "not a LAVT / SemiRES checkpoint"),
        (lambda ck, p: torch.save({**ck, "ema": {}}, p), "unexpected entry 'ema'"),
        (
            lambda ck, p: torch.save({**ck, "args": _Evil()}, p),
            r"refusing to load the global print",
        ),
        (
            lambda ck, p: torch.save({k: v for k, v in ck.items() if k != "bert_model"}, p),
            "no BERT weights",
        ),
        (
            lambda ck, p: torch.save(
                {**ck, "model": {k: v for k, v in ck["model"].items() if "norm2" not in k}}, p
            ),
            r"missing keys 12 \(backbone\.layers\.0\.blocks\.0\.norm2\.bias, [^)]*\)$",
        ),
        (
            lambda ck, p: torch.save(
                {**ck, "model": {**ck["model"], "backbone.extra.weight": torch.ones(1)}}, p
            ),
            r"keys that are not LAVT's: backbone\.extra\.weight",
        ),
        (
            lambda ck, p: torch.save(
                {**ck, "model": {**ck["model"], "classifier.conv1_1.bias": torch.ones(3)}}, p
            ),
            r"mis-shaped keys, e\.g\. decoder\.classifier\.bias \(3,\) vs \(2,\)",
        ),
    ],
)
def test_import_refuses_bad_files(lavt_model, tmp_path, make, message):
    ck = torch.load(_lavt_file(lavt_model, tmp_path / "good.pth"), weights_only=False)
    bad = tmp_path / "bad.pth"
    make(ck, bad)
    with pytest.raises(CheckpointError, match=message):
        import_lavt(bad, tmp_path / "out.pt", tokenizer="minilm")
    assert not (tmp_path / "out.pt").exists()


def test_import_needs_a_tokenizer_it_can_read(lavt_model, tmp_path):
    path = _lavt_file(lavt_model, tmp_path / "a.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"vocab\.txt"):
        import_lavt(path, tmp_path / "out.pt", tokenizer=str(empty))
    # offline, the hub name stored in args cannot be fetched: the error says what to pass
    with pytest.raises(CheckpointError, match="tokenizer 'bert-base-uncased'"):
        import_lavt(path, tmp_path / "out.pt")


class _MakeDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.makedirs, (str(self.path),))


def test_safe_loading_runs_no_code_from_the_file(tmp_path):
    from semires.runtime.lavt_import import read_lavt_checkpoint

    marker = tmp_path / "should-not-exist"
    path = tmp_path / "x.pth"
    torch.save({"model": {}, "args": _MakeDir(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load the global (posix|os)\.makedirs"):
        read_lavt_checkpoint(path)
    assert not marker.exists()
    with path.open("wb") as fh:  # a plain pickle, not a torch file
        pickle.dump({"model": {}, "args": _MakeDir(marker)}, fh)
    with pytest.raises(
        CheckpointError, match=r"cannot read LAVT checkpoint .*not a torch checkpoint"
    ):
        read_lavt_checkpoint(path)
    assert not marker.exists()


# --- the commands a user runs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(lavt_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imported")
    path = _lavt_file(lavt_model, folder / "lavt.pth")
    assert main(["model", "import-lavt", str(path), "--out", str(folder / "lavt.pt"), "--tokenizer", "minilm"]) == 0  # fmt: skip
    return folder / "lavt.pt"


def test_cli_import_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main(["model", "import-lavt", str(bad), "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read LAVT checkpoint") and "\n" not in err


def test_predict_writes_the_probability(imported, tmp_path, capsys):
    from PIL import Image

    import semires

    rng = np.random.default_rng(0)
    image = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    prob_path, mask_path = tmp_path / "p.npy", tmp_path / "m.png"
    args = ["predict", "--checkpoint", str(imported), "--image", str(image), "--text", "a man"]
    assert (
        main([*args, "--out", str(mask_path), "--prob-out", str(prob_path), "--device", "cpu"]) == 0
    )
    prob = np.load(prob_path)
    assert prob.dtype == np.float32 and prob.shape == (50, 70)
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    expected = semires.load(imported, device="cpu").predict_proba(str(image), "a man")
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    mask = np.asarray(Image.open(mask_path)) > 0
    np.testing.assert_array_equal(mask, prob > 0.5)


def test_evaluate_an_imported_checkpoint(imported, synth_tiny, tmp_path, capsys):
    data = ["--format", "refer", "--root", str(synth_tiny), "--dataset", "synthref", "--split-by", "synth"]  # fmt: skip
    out = tmp_path / "m.json"
    code = main(["evaluate", "--checkpoint", str(imported), "--split", "val", *data, "--json", str(out), "-q", "--device", "cpu"])  # fmt: skip
    assert code == 0
    import json

    metrics = json.loads(out.read_text())
    assert metrics["n"] > 0 and 0.0 <= metrics["oIoU"] <= 100.0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(imported), "--split", "val", "-q"]) == 2
    assert "names no dataset" in capsys.readouterr().err


def test_run_starts_teacher_student_from_an_imported_burn_in(imported, tmp_path):
    import json

    from semires.pipeline import load_run_config
    from semires.pipeline import run as run_pipeline

    out = tmp_path / "run"
    cfg = load_run_config(
        preset="demo",
        overrides=[
            f"out={out}",
            "synth.preset=tiny",
            "labeled=34%",
            "model.name=test-lavt",
            "model.overrides={}",
            "data.img_size=64",
            "data.test_splits=[testA]",
            f"burn_in_checkpoint={imported}",
            "teacher_student.epochs=1",
            "teacher_student.steps_per_epoch=2",
            "teacher_student.batch_size=2",
            "teacher_student.threads=null",
            "semi.unlabeled_batch_size=2",
            "semi.eval_model=teacher",
            "methods=[teacher_student]",
            "parallel=1",
            "report.qualitative=0",
        ],
    )
    summary = run_pipeline(cfg, progress=False)
    assert not (out / "supervised" / "best.pt").exists()  # no burn-in was trained
    scored = json.loads((out / "supervised" / "metrics.json").read_text())
    assert scored["checkpoint"] == str(imported) and "testA" in scored["splits"]
    ts = json.loads((out / "teacher_student" / "metrics.json").read_text())
    assert ts["eval_model"] == "teacher" and ts["companion"]["model"] == "student"
    assert summary["networks"]["teacher_student"]["headline"] == "teacher"
    assert "Student and EMA teacher" in (out / "results.md").read_text()
    import yaml

    ts_cfg = yaml.safe_load((out / "teacher_student" / "config.yaml").read_text())
    assert ts_cfg["semi"]["burn_in"] == str(imported)
