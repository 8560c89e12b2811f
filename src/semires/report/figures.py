"""The report's figures: training curves, pseudo-label quality, qualitative examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from semires.layout import SUPERVISED, RunLayout
from semires.methods import label, method
from semires.report.inputs import ReportInputs, curve_points, read_history


def draw_figures(
    inputs: ReportInputs, results: dict[str, dict[str, Any]], split: str, quality: dict
) -> dict[str, str]:
    """Draw the figures into ``figures/``; their paths relative to the run folder."""
    figures = inputs.layout.figures
    figures.mkdir(parents=True, exist_ok=True)
    methods = list(results)
    plot_curves(inputs, methods, figures / "curves.png")
    figs = {"curves": "figures/curves.png"}
    if quality:
        plot_pseudo_labels(inputs.layout, quality, figures / "pseudo_labels.png")
        figs["pseudo_labels"] = "figures/pseudo_labels.png"
    refined = [m for m in methods if method(m).needs_proposals]
    if refined and inputs.qualitative > 0:
        best = max(refined, key=lambda m: results[m]["splits"][split]["oIoU"])
        if plot_examples(inputs, best, figures / "examples.png", inputs.qualitative):
            figs["examples"] = "figures/examples.png"
    return figs


def plot_curves(inputs: ReportInputs, methods: list[str], path: Path) -> None:
    """Training loss and validation oIoU against optimizer steps for every stage.

    Teacher-student runs start from the burn-in checkpoint, so their steps continue the
    burn-in's (a dashed line marks where it ended); val points are joined across the epochs
    that were not evaluated.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = inputs.val_split
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    burn_in = read_history(inputs.layout.supervised.history)
    offset = burn_in[-1]["step"] if burn_in else 0
    for m in methods:
        hist = read_history(inputs.layout.stage(m).history)
        if not hist:
            continue
        name = label(m)
        loss, scored = curve_points(hist, burn_in if m != SUPERVISED else [], val)
        axes[0].plot(*zip(*loss, strict=True), marker="o", ms=3, label=name)
        if scored:
            axes[1].plot(*zip(*scored, strict=True), marker="o", ms=3, label=name)
    for ax in axes:
        if offset and len(methods) > 1:
            ax.axvline(offset, color="0.6", ls="--", lw=0.8)
    axes[0].set(title="training loss (teacher-student: supervised + unsupervised)", xlabel="step")
    axes[1].set(title=f"{val} oIoU (%)", xlabel="step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pseudo_labels(layout: RunLayout, quality: dict[str, dict[str, float]], path: Path) -> None:
    """Pseudo-label IoU before/after refinement per epoch, and the share of corrections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in quality:
        hist = read_history(layout.stage(m).history)
        epochs = [h["epoch"] for h in hist]
        line = axes[0].plot(
            epochs,
            [100 * h.get("pl_iou_after", np.nan) for h in hist],
            marker="o",
            ms=3,
            label=f"{label(m)}: refined",
        )
        axes[0].plot(
            epochs,
            [100 * h.get("pl_iou_before", np.nan) for h in hist],
            ls="--",
            color=line[0].get_color(),
            label=f"{label(m)}: teacher",
        )
    axes[0].set(title="pseudo-label IoU with GT (%)", xlabel="epoch")
    axes[0].legend(fontsize=7)
    names = list(quality)
    pos = [100 * quality[m].get("corrections_positive", 0) for m in names]
    neg = [100 * quality[m].get("corrections_negative", 0) for m in names]
    same = [100 * quality[m].get("corrections_no_change", 0) for m in names]
    x = np.arange(len(names))
    axes[1].bar(x, pos, color="#3a3", label="positive")
    axes[1].bar(x, neg, bottom=pos, color="#c33", label="negative")
    axes[1].bar(x, same, bottom=np.add(pos, neg), color="#bbb", label="no change")
    axes[1].set_xticks(x, [label(m) for m in names], fontsize=8)
    axes[1].set(title="refinement corrections, last epoch (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(inputs: ReportInputs, name: str, path: Path, n: int) -> int:
    """Unlabeled training samples, one row each: image + expression, ground truth, the burn-in
    teacher's pseudo-label, the refined label (the method's rule on the image's candidates), and
    the method's final prediction; columns titled, masks tinted AND outlined (so they stay
    visible on coloured shapes). Returns the number of rows drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semires.data import load_index
    from semires.data.splits import read_split
    from semires.evaluate.predict import load
    from semires.proposals.store import ProposalStore
    from semires.train.pseudo import PseudoLabeler

    cfg = inputs.stage_configs[name]
    index = inputs.index if inputs.index is not None else load_index(cfg.data.spec())
    refs = read_split(inputs.split_dir, index).unlabeled_refs(index)
    if not refs or n <= 0:
        return 0
    rng = np.random.default_rng(0)
    picks = [refs[i] for i in sorted(rng.choice(len(refs), size=min(n, len(refs)), replace=False))]
    teacher = load(inputs.burn_in, device="cpu")
    labeler = PseudoLabeler(teacher.model, cfg.semi, device=teacher.device)
    store = ProposalStore.open(cfg.semi.proposals) if cfg.semi.proposals else None
    final = load(inputs.layout.stage(name).best, device="cpu")
    titles = (
        "image",
        "ground truth",
        "teacher pseudo-label",
        f"refined: {label(name)}",
        f"final: {label(name)}",
    )
    fig, axes = plt.subplots(len(picks), 5, figsize=(13, 2.7 * len(picks)), squeeze=False)
    for row, ref in zip(axes, picks, strict=True):
        image, sentence, masks = _example(index, ref, cfg, labeler, store, final)
        for ax, mask in zip(row, [None, *masks], strict=True):
            ax.imshow(image)
            if mask is not None:
                tint = np.zeros((*mask.shape, 4))
                tint[mask] = (1.0, 0.1, 0.1, 0.45)
                ax.imshow(tint)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=["white"], linewidths=2.2)
                    ax.contour(mask, levels=[0.5], colors=["#d00000"], linewidths=1.1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_xlabel(f'"{sentence}"', fontsize=10, wrap=True)
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(picks)


def _example(
    index: Any, ref: Any, cfg: Any, labeler: Any, store: Any, final: Any
) -> tuple[Any, str, list]:
    """One row of :func:`plot_examples`: the image, the expression, and the four masks (ground
    truth, pseudo-label, refined label, final prediction) at the image's size. The pseudo-label
    and the refined label are the training step's (:class:`~semires.train.pseudo.PseudoLabeler`
    at the training size, with the method's consensus, candidate limit and strategy), shown
    resized to the image."""
    from semires.data.transforms import resize_to

    image = index.load_image(ref.image_id)
    sentence = ref.sentences[0].raw
    gt = index.mask(ref.object_id).astype(bool)
    _, labels = labeler.for_ref(index, ref, cfg.data.img_size, store=store, sentence=sentence)
    pseudo = resize_to(labels.pseudo[0], gt.shape)
    refined = resize_to(labels.result.labels[0], gt.shape)
    return image, sentence, [gt, pseudo, refined, final.predict(image, sentence)]
