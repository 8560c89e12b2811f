"""The Gradio page of ``semires serve``: UI glue around :mod:`semires.serve.samples`.

Tab "segment": a test image (or an upload) and one or more expressions -> each mask in its own
colour, the foreground probabilities, the masks as PNG files and the time taken.
Tab "pseudo-labels" (with a run folder): an unlabeled training sample as a method's refinement
saw it, with the IoUs; filtered by what refinement did to it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from semires.data import RESIndex
from semires.data.masks import write_mask_png
from semires.evaluate.predict import Segmenter, overlay
from semires.methods import label
from semires.serve.samples import VERDICTS, PseudoLabel, RunView

#: one colour per expression / candidate (matplotlib's tab10)
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
GREEN, RED, BLUE = (40, 200, 60), (230, 40, 40), (40, 110, 255)


class Files:
    """The files the page shows, each written once under a new name: Gradio copies a file into
    its cache atomically, while an array it would write in place (where the same picture shown
    again can be rewritten while a browser reads it)."""

    def __init__(self) -> None:
        self.root = tempfile.TemporaryDirectory(prefix="semires-serve-")

    def folder(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root.name))

    def png(self, image: np.ndarray) -> str:
        fd, path = tempfile.mkstemp(suffix=".png", dir=self.root.name)
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(image).save(fh, format="PNG")
        return path


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def heatmap(prob: np.ndarray) -> np.ndarray:
    """A probability map as a uint8 RGB image (magma: 0 black, 1 light yellow)."""
    from matplotlib import colormaps

    return (colormaps["magma"](prob)[..., :3] * 255).astype(np.uint8)


def enlarge(image: np.ndarray, side: int = 384) -> np.ndarray:
    """A small image shown bigger: each pixel repeated (a whole factor, so nothing blurs)."""
    k = max(1, side // max(image.shape[:2]))
    return image.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else image


def draw(image: np.ndarray, masks, colours, alpha: float = 0.5) -> np.ndarray:
    """The image with each mask tinted (alpha 0: only its boundary) in its colour; the rest of
    the photo is left as it is, and a small tinted mask is framed so that it is seen at once."""
    out = image
    for mask, c in zip(masks, colours, strict=True):
        out = overlay(out, mask, c, alpha)
        out = mark_small(out, mask, c) if alpha > 0 else out
    return out


#: a mask under this share of the image gets a thick outline and a frame (:func:`mark_small`)
SMALL_MASK = 0.02


def mark_small(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """A small mask (under :data:`SMALL_MASK` of the image) drawn so that it is found at a
    glance on a large photo shown small: its boundary about 1/150 of the image side thick and
    a frame around it, in its colour. Other masks: the image as it is."""
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import find_boundaries

    m = np.asarray(mask, bool)
    if not m.any() or m.mean() >= SMALL_MASK:
        return image
    h, w = m.shape
    width = max(1, round(max(h, w) / 150))
    out = image.copy()
    ring = binary_dilation(find_boundaries(m, mode="outer"), iterations=width) & ~m
    out[ring] = colour
    ys, xs = np.nonzero(m)
    gap = 4 * width
    top, left = max(0, ys.min() - gap), max(0, xs.min() - gap)
    bottom, right = min(h - 1, ys.max() + gap), min(w - 1, xs.max() + gap)
    out[top : top + width, left : right + 1] = colour
    out[bottom - width + 1 : bottom + 1, left : right + 1] = colour
    out[top : bottom + 1, left : left + width] = colour
    out[top : bottom + 1, right - width + 1 : right + 1] = colour
    return out


def _swatch(c: tuple[int, int, int]) -> str:
    return f'<span style="color:rgb{c}">&#9632;</span>'


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


class Segment:
    """The segment tab's callbacks."""

    def __init__(self, seg: Segmenter, index: RESIndex | None, refs, files: Files) -> None:
        self.seg, self.index, self.files = seg, index, files
        self.refs = {r.id: r for r in refs}

    def choices(self) -> list[tuple[str, int]]:
        return [
            (f"{r.split} · image {r.image_id} · {r.sentences[0].raw}", r.id)
            for r in self.refs.values()
        ]

    def pick(self, ref_id: int | None):
        if ref_id is None:
            return gr.update(), gr.update()
        ref = self.refs[ref_id]
        image = self.files.png(self.index.load_image(ref.image_id))
        return image, "\n".join(s.raw for s in ref.sentences)

    def run(self, image: np.ndarray | None, text: str):
        texts = [t.strip() for t in (text or "").splitlines() if t.strip()]
        if image is None:
            raise gr.Error("pick a test image or upload one")
        if not texts:
            raise gr.Error("type an expression (one per line for several)")
        start = time.perf_counter()
        probs = self.seg.predict_proba(image, texts)
        seconds = time.perf_counter() - start
        masks = probs > 0.5
        folder = self.files.folder()
        files, rows = [], []
        for i, (t, mask, prob) in enumerate(zip(texts, masks, probs, strict=True)):
            name = re.sub(r"[^a-z0-9]+", "_", t.lower()).strip("_")[:40] or "mask"
            files.append(str(folder / f"mask_{i + 1}_{name}.png"))
            write_mask_png(files[-1], mask)
            cells = [_swatch(colour(i)), t.replace("|", "/"), int(mask.sum())]
            cells += [f"{100 * mask.mean():.1f}%", f"{prob.max():.3f}"]
            rows.append("| " + " | ".join(map(str, cells)) + " |")
        h, w = image.shape[:2]
        summary = "\n".join(
            [
                f"**{len(texts)} expression(s), {w}×{h} image: {seconds:.3f} s** "
                f"on {self.seg.device.type}",
                "",
                "| | expression | mask pixels | of the image | max probability |",
                "|---|---|---:|---:|---:|",
                *rows,
            ]
        )
        view = self.files.png(enlarge(draw(image, masks, [colour(i) for i in range(len(texts))])))
        probs_gallery = [
            (self.files.png(enlarge(heatmap(p), 256)), f"{i + 1}: {t}")
            for i, (t, p) in enumerate(zip(texts, probs, strict=True))
        ]
        return view, probs_gallery, summary, files


class PseudoLabels:
    """The pseudo-label tab's callbacks."""

    def __init__(self, view: RunView, files: Files) -> None:
        self.view, self.files = view, files

    def choices(self, method: str, verdict: str, progress=None) -> list[tuple[str, int]]:
        ids = list(self.view.refs)
        if verdict != "all":
            verdicts = self.view.verdicts(method, progress)
            ids = [i for i in ids if verdicts[i] == verdict]
        return [(self.label(self.view.refs[i]), i) for i in ids]

    @staticmethod
    def label(ref) -> str:
        return f"image {ref.image_id} · ref {ref.id} · {ref.sentences[0].raw}"

    def refilter(self, method: str, verdict: str, progress=gr.Progress()):
        choices = self.choices(method, verdict, progress.tqdm if verdict != "all" else None)
        done = self.view.counts(method)
        counts = f"{sum(done.values())} samples: " if done else ""
        counts += ", ".join(f"{v} {n}" for v, n in done.items())
        if not choices:
            counts += f" — none is '{verdict}'"
        first = choices[0][1] if choices else None
        label = f"unlabeled training sample ({len(choices)})"
        return gr.update(choices=choices, value=first, label=label), counts

    def show(self, method: str, ref_id: int | None):
        if ref_id is None:
            return [], ""
        s = self.view.sample(method, ref_id)
        return self.panels(s), self.table(method, s)

    def panels(self, s: PseudoLabel) -> list[tuple[str, str]]:
        k, n = len(s.candidates), int(s.selected.sum())
        cands = draw(s.image, s.candidates, [colour(i) for i in range(k)], alpha=0.0)
        chosen = draw(s.image, s.candidates[s.selected], [GREEN] * n, alpha=0.5)
        out = [
            (s.image, f'"{s.sentence}"'),
            (draw(s.image, [s.pseudo], [RED]), f"teacher ({_pct(s.iou_teacher)})"),
            (cands, f"candidates ({k})"),
            (chosen, f"selected ({n})"),
            (draw(s.image, [s.refined], [BLUE]), f"refined ({_pct(s.iou_refined)})"),
        ]
        if s.gt is not None:
            out.append((draw(s.image, [s.gt], [GREEN]), "ground truth"))
        return [(self.files.png(enlarge(im, 256)), caption) for im, caption in out]

    def table(self, method: str, s: PseudoLabel) -> str:
        rule = self.view.semi[method].refine
        change = (
            "n/a"
            if s.iou_teacher is None
            else f"{100 * (s.iou_refined - s.iou_teacher):+.2f} points"
        )
        return "\n".join(
            [
                f"**{s.verdict}** — method `{method}` (refine strategy `{rule.strategy}`), "
                f'image {s.ref.image_id}, ref {s.ref.id}: "{s.sentence}"',
                "",
                "| | IoU with ground truth |",
                "|---|---:|",
                f"| teacher pseudo-label | {_pct(s.iou_teacher)} |",
                f"| refined label | {_pct(s.iou_refined)} |",
                f"| change | {change} |",
                "",
                f"matched: {'yes' if s.matched else 'no'} · candidates: {len(s.candidates)} · "
                f"selected: {int(s.selected.sum())}",
            ]
        )


def build_app(
    seg: Segmenter,
    *,
    index: RESIndex | None = None,
    test_refs=(),
    run: RunView | None = None,
    title: str = "semires",
) -> gr.Blocks:
    """The page: a segment tab, and a pseudo-label tab when a run folder is given."""
    files = Files()
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}")
        with gr.Tab("Segment", id="segment"):
            _segment_tab(Segment(seg, index, test_refs, files), bool(test_refs))
        if run is not None:
            with gr.Tab("Pseudo-labels", id="pseudo"):
                _pseudo_label_tab(app, PseudoLabels(run, files), run)
    return app


def _segment_tab(segment: Segment, with_test_images: bool) -> None:
    with gr.Row():
        with gr.Column():
            pick = gr.Dropdown(
                segment.choices(),
                value=None,
                label="test image",
                info="from the test split; or upload an image below",
                visible=with_test_images,
                elem_id="test-pick",
            )
            image = gr.Image(
                type="numpy",
                format="png",
                sources=["upload", "clipboard"],
                height=360,
                label="image",
                elem_id="seg-image",
            )
            text = gr.Textbox(
                lines=3,
                label="expressions (one per line)",
                placeholder="the small red star left of the blue ring",
                elem_id="seg-text",
            )
            go = gr.Button("Segment", variant="primary", elem_id="seg-go")
        with gr.Column():
            view = gr.Image(format="png", label="masks", interactive=False, height=360)
            summary = gr.Markdown(elem_id="seg-summary")
            probs = gr.Gallery(label="foreground probability", format="png", columns=3, height=260)
            mask_files = gr.File(
                file_count="multiple", label="masks (PNG)", interactive=False, elem_id="seg-files"
            )
    pick.input(segment.pick, pick, [image, text])
    go.click(segment.run, [image, text], [view, probs, summary, mask_files])


def _pseudo_label_tab(app: gr.Blocks, pl: PseudoLabels, run: RunView) -> None:
    with gr.Row():
        method = gr.Dropdown(
            [(label(m), m) for m in run.methods], value=run.methods[0], label="method"
        )
        verdict = gr.Radio(["all", *VERDICTS], value="all", label="refinement", elem_id="pl-filter")
    start = pl.choices(run.methods[0], "all")
    sample = gr.Dropdown(
        start,
        value=start[0][1] if start else None,
        label=f"unlabeled training sample ({len(start)})",
        elem_id="pl-sample",
    )
    counts = gr.Markdown(elem_id="pl-counts")
    panels = gr.Gallery(format="png", columns=6, height=260, object_fit="contain", label="sample")
    stats = gr.Markdown(elem_id="pl-stats")
    for trigger in (method.input, verdict.input):
        trigger(pl.refilter, [method, verdict], [sample, counts]).then(
            pl.show, [method, sample], [panels, stats]
        )
    sample.input(pl.show, [method, sample], [panels, stats])
    app.load(pl.show, [method, sample], [panels, stats])
