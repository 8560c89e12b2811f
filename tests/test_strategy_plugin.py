"""Extension and agreement of the teacher-student method's pseudo-labels.

- A refinement strategy defined HERE (not in the package), with its own options and counter, is
  registered with one decorator and selected by name in a config: a tiny teacher-student run
  trains with it, its counter reaches history.json, its options are checked with their key path.
- :class:`~semires.train.pseudo.PseudoLabeler.for_refs` (the report's examples, ``serve``'s
  pseudo-label tab) gives exactly the labels the training step used on the same batch, for every
  registered strategy, with consensus and a candidate limit.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from semires.data import DataSpec, load_index
from semires.data.splits import read_split
from semires.errors import ConfigError
from semires.methods import method
from semires.proposals.store import ProposalStore
from semires.train.engine import Trainer, train
from semires.train.losses import PixelLosses
from semires.train.pseudo import PseudoLabeler
from semires.train.refine import RefineResult, as_bool, candidate_overlaps
from semires.train.strategies import STRATEGIES, Strategy, register_strategy
from test_engine import _gt_proposals, _split, make_cfg, semi_args


@dataclass
class LargestOptions:
    #: a candidate is taken when this share of it lies inside the pseudo-label
    inside: float = 0.5


@register_strategy("test_largest", label="largest inside candidate")
class LargestInside(Strategy):
    """The largest candidate with at least ``inside`` of it in P; CE on those samples only."""

    needs_proposals = True
    counters = ("picked",)
    Options = LargestOptions
    seen_options: ClassVar[list[float]] = []

    def labels(self, P: Tensor, p: Tensor, M, valid: Tensor) -> RefineResult:
        self.seen_options.append(self.options.inside)
        ov = candidate_overlaps(P, M, valid)
        ok = valid & (ov.inter >= self.options.inside * ov.area_m.clamp(min=1))
        area = torch.where(ok, ov.area_m, torch.full_like(ov.area_m, -1))
        best, matched = area.argmax(1), ok.any(1)
        chosen = as_bool(M)[torch.arange(P.shape[0]), best]
        labels = torch.where(matched[:, None, None], chosen, P.bool())
        counts = {"picked": int(matched.sum())}
        return RefineResult(
            labels, matched[:, None, None].to(p.dtype).expand_as(p), matched, counts
        )

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        keep = result.weights > 0
        return losses.masked(logits, result.labels, keep)


@pytest.fixture(scope="module")
def semi_setup(synth_tiny, tmp_path_factory):
    """A burn-in, a labeled split and a proposal store of the GT objects (and their halves)."""
    tmp = tmp_path_factory.mktemp("plugin")
    burn = tmp / "sup"
    train(make_cfg(synth_tiny, burn, "train.epochs=1"), progress=False)
    split_dir = _split(synth_tiny, tmp)
    index = load_index(DataSpec(root=str(synth_tiny), dataset="synthref", split_by="synth"))
    unl = list(read_split(split_dir, index).unlabeled_images)
    props = _gt_proposals(synth_tiny, tmp / "props", unl)
    common = semi_args(burn / "best.pt", split_dir, props)
    return common, index, props


def test_a_strategy_from_outside_the_package_trains_by_name(synth_tiny, semi_setup, tmp_path):
    common, _, _ = semi_setup
    assert "test_largest" in STRATEGIES
    assert method("test_largest").label == "largest inside candidate"  # a `semires run` method
    assert method("test_largest").needs_proposals
    LargestInside.seen_options.clear()
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "mine",
        *common,
        "semi.refine.strategy=test_largest",
        "semi.refine.options.inside=0.8",
        "train.epochs=1",
    )
    result = train(cfg, progress=False)
    assert set(LargestInside.seen_options) == {0.8}  # the option from the config reached it
    assert len(LargestInside.seen_options) == 3  # one labelling per training step
    hist = json.loads((tmp_path / "mine" / "history.json").read_text())[-1]
    assert 0.0 < hist["share_picked"] <= 1.0  # its counter, as a share of the samples
    assert hist["miss_rate"] == pytest.approx(1.0 - hist["share_picked"])
    assert hist["share_matched_cpi_u"] == 0.0  # the other strategies' counters: 0
    assert 0.0 <= result["splits"]["testA"]["oIoU"] <= 100.0

    with pytest.raises(ConfigError, match=r"semi\.refine\.options\.nope"):
        make_cfg(synth_tiny, tmp_path / "bad", *common, "semi.refine.strategy=test_largest",
                 "semi.refine.options.nope=1")  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"'semi\.refine\.strategy': expected one of .*test_largest"
    ):
        make_cfg(synth_tiny, tmp_path / "bad", *common, "semi.refine.strategy=nope")
    with pytest.raises(ConfigError, match=r"semi\.refine\.options: strategy 'cpi' has no options"):
        make_cfg(synth_tiny, tmp_path / "bad", *common, "semi.refine.options.inside=1")


#: labeler settings beyond a strategy, each over CPI
_VARIANTS = {
    "consensus": ["semi.consensus=true"],
    "exclusive": ["semi.assign=exclusive"],
    "objects": ["semi.consensus=true", "semi.flip_view=true", "semi.assign=exclusive"],
}


@pytest.mark.parametrize("strategy", [*STRATEGIES, *_VARIANTS])
def test_offline_pseudo_labels_are_the_training_labels(synth_tiny, semi_setup, tmp_path, strategy):
    """Training labels of one step, recorded where the strategy's loss receives them, against
    ``PseudoLabeler.for_refs`` of the same samples and sentences with the teacher of that step
    (no blur, so the weak view is the image; at most 3 candidates per image)."""
    common, index, props = semi_setup
    extra = [*_VARIANTS[strategy], "semi.refine.strategy=cpi"] if strategy in _VARIANTS else [
        f"semi.refine.strategy={strategy}"]  # fmt: skip
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "run",
        *common,
        *extra,
        "semi.augment.blur_p=0",
        "semi.max_candidates=3",
    )
    trainer = Trainer(cfg, progress=False)
    method_ = trainer.method
    teacher = copy.deepcopy(method_.teacher)  # the teacher before the step's EMA update
    used: list[RefineResult] = []
    real_loss = method_.labeler.strategy.loss
    method_.labeler.strategy.loss = lambda logits, result, losses: (
        used.append(result) or real_loss(logits, result, losses)
    )
    batches = list(next(iter(trainer.batches(0, 1))))
    trainer.train_step(batches)
    (result,) = used

    text = method_.labeler.text
    labeler = PseudoLabeler(teacher, cfg.semi, device=trainer.device, text=text)
    unl = batches[1]
    samples = [(index.refs[i], s) for i, s in zip(unl["ref_id"], unl["sentence"], strict=True)]
    _, offline = labeler.for_refs(
        index, samples, cfg.data.img_size, store=ProposalStore.open(props)
    )
    assert offline.candidates.shape[1] <= 3
    if "semi.assign=exclusive" in extra:  # the image's other referents were labelled too
        assert any(unl["others"]) and offline.kept is not None
    assert torch.equal(offline.result.labels, result.labels)
    assert torch.equal(offline.result.weights, result.weights)
    assert torch.equal(offline.result.matched, result.matched)
    assert offline.result.counts == result.counts


@pytest.mark.parametrize(
    ("signal", "extra"),
    [("confidence", []), ("agreement", ["semi.consensus=true"])],  # agreement: consensus alone
)
def test_object_selection_trains_on_the_kept_share(synth_tiny, semi_setup, tmp_path, signal, extra):
    """With ``semi.select`` the strategy's loss receives the ceil(q(t) B) samples of highest
    signal, q rising from ``start`` to ``end``; the epoch's record says what was kept."""
    import math

    from semires.train.objects import keep_top, kept_share

    common, _, _ = semi_setup
    cfg = make_cfg(
        synth_tiny,
        tmp_path / "select",
        *common,
        "semi.refine.strategy=cpi",
        f"semi.select.signal={signal}",
        *extra,
        "semi.select.start=0.25",
        "train.epochs=1",
        "train.steps_per_epoch=4",
    )
    trainer = Trainer(cfg, progress=False)
    method_ = trainer.method
    used, expected = [], []
    real_labeler, real_loss = method_.labeler, method_.labeler.strategy.loss

    def labeler(unl):  # the labels, and the samples selection should keep from them
        labels = real_labeler(unl)
        share = kept_share(trainer.step, trainer.total_steps, 0.25, 1.0, 1.0)
        expected.append(labels.result.labels[keep_top(labels.signals[signal], share)])
        return labels

    real_labeler.strategy.loss = lambda logits, result, losses: (
        used.append(result.labels) or real_loss(logits, result, losses)
    )
    labeler.strategy, labeler.text = real_labeler.strategy, real_labeler.text
    method_.labeler = labeler
    for batches in trainer.batches(0, 4):
        trainer.train_step(list(batches))
    record = method_.epoch_record(trainer.info)
    batch = cfg.semi.unlabeled_batch_size
    sizes = [u.shape[0] for u in used]
    assert sizes == [math.ceil((0.25 + 0.75 * t / 4) * batch) for t in range(4)]
    assert all(torch.equal(u, e) for u, e in zip(used, expected, strict=True))
    assert record["kept_share"] == pytest.approx(sum(sizes) / (4 * batch))
    assert {"grounding_kept", f"precision_{signal}", "precision_mean"} <= set(record)


def test_exclusive_assignment_leaves_single_referent_images_alone(synth_tiny, semi_setup, tmp_path):
    """A sample whose image has no other referent: the exclusive labeler's labels are the
    independent one's, bit for bit; with the image's other referents some candidate is withheld
    from some sample, and never one that was not valid."""
    import dataclasses

    common, index, props = semi_setup
    cfg = make_cfg(synth_tiny, tmp_path / "x", *common, "semi.refine.strategy=cpi")
    trainer = Trainer(cfg, progress=False)
    teacher, text = trainer.method.teacher, trainer.method.labeler.text
    labelers = {
        a: PseudoLabeler(
            teacher, dataclasses.replace(cfg.semi, assign=a), device=trainer.device, text=text
        )
        for a in ("independent", "exclusive")
    }
    refs = trainer.method.unlabeled_ds.refs[:8]
    samples = [(r, r.sentences[0].raw) for r in refs]
    store = ProposalStore.open(props)
    batch, many = labelers["exclusive"].for_refs(index, samples, cfg.data.img_size, store=store)
    assert all(batch["others"]) and (many.kept != many.valid).any()
    assert not (many.kept & ~many.valid).any()
    alone = {**batch, "others": [[] for _ in refs]}  # as if each image had one referent
    a, b = labelers["independent"](alone), labelers["exclusive"](alone)
    assert torch.equal(a.result.labels, b.result.labels)
    assert torch.equal(a.result.weights, b.result.weights)
    assert torch.equal(b.kept, b.valid)


def test_pwa_class_weights_belong_to_the_teacher_student_method(synth_tiny, tmp_path):
    from semires.train.method import build_method

    off = make_cfg(synth_tiny, tmp_path / "a", "semi.pwa_class_weights=false")
    assert build_method(off, device=torch.device("cpu")).make_losses().pwa_class_weights
    semi = make_cfg(
        synth_tiny,
        tmp_path / "b",
        "semi.enabled=true",
        "semi.refine.strategy=none",
        "semi.burn_in=x.pt",
        "semi.pwa_class_weights=false",
    )
    losses = build_method(semi, device=torch.device("cpu")).make_losses()
    assert not losses.pwa_class_weights and losses.class_weights.tolist() == pytest.approx(
        [0.9, 1.1]
    )


def test_mirrored_student_view_learns_the_mirrored_label(synth_tiny, semi_setup, tmp_path):
    """``semi.flip_student=1``: the student's forward gets every strong view mirrored with its
    sentence's left / right swapped, and the strategy's loss the teacher's label mirrored; the
    teacher's labels are those of the same step without it."""
    from semires.data.flip import flip_image, flip_sentence

    common, _, _ = semi_setup
    seen: dict[str, list] = {}
    for flip in ("0", "1"):
        cfg = make_cfg(synth_tiny, tmp_path / flip, *common, f"semi.flip_student={flip}")
        trainer = Trainer(cfg, progress=False)
        method_ = trainer.method
        real_loss, real_forward = method_.labeler.strategy.loss, trainer._forward
        method_.labeler.strategy.loss = lambda logits, result, losses, f=real_loss: (
            seen.setdefault("results", []).append(result) or f(logits, result, losses)
        )
        trainer._forward = lambda images, sentences, f=real_forward: (
            seen.setdefault("inputs", []).append((images, sentences)) or f(images, sentences)
        )
        batches = list(next(iter(trainer.batches(0, 1))))
        trainer.train_step(batches)
        seen.setdefault("batches", []).append(batches)
    plain, mirrored = seen["results"]
    (images0, sentences0), (images1, sentences1) = seen["inputs"]
    b = len(seen["batches"][0][0]["sentence"])  # the labeled part comes first
    assert torch.equal(images1[:b], images0[:b]) and sentences1[:b] == sentences0[:b]
    assert torch.equal(images1[b:], flip_image(images0[b:]))
    assert sentences1[b:] == [flip_sentence(s) for s in sentences0[b:]]
    assert torch.equal(mirrored.labels, flip_image(plain.labels))
    assert torch.equal(mirrored.weights, flip_image(plain.weights))
    assert torch.equal(mirrored.matched, plain.matched)
