"""`semires serve`: errors, the pseudo-label view against a direct computation, and the page
driven in a real (headless) Chromium: the masks it returns equal ``Segmenter.predict``'s and the
IoUs it shows equal a direct computation.

The browser tests need gradio, playwright and a system Chromium (``apt-get install chromium``;
``.ci/run`` installs it); nothing is downloaded. They skip, saying why, without them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import semires
from semires.cli import main
from semires.data import load_index
from semires.data.splits import read_split
from semires.data.transforms import normalize, resize_image, resize_mask
from semires.pipeline import load_run_config
from semires.pipeline import run as run_pipeline
from semires.proposals.store import ProposalStore
from semires.train.config import load_config
from semires.train.strategies import strategy_labels
from test_pipeline import TINY

# gradio's own pandas use warns in its server thread
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

# a tiny run whose burn-in is trained just enough to give partial (not empty, not full) masks:
# about 15 s on 2 cores
RUN = [
    *TINY,  # then what differs from the pipeline tests' tiny run
    "labeled=50%",
    "burn_in.epochs=4",
    "burn_in.steps_per_epoch=15",
    "burn_in.batch_size=8",
    "burn_in.eval_every=4",
    "report.qualitative=0",
    "methods=[iom, cpi]",
    "parallel=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "run"
    run_pipeline(load_run_config(preset="demo", overrides=[f"out={out}", *RUN]), progress=False)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def direct(run_dir, method: str) -> dict[int, dict]:
    """Every unlabeled sample of ``method``, computed here from the method's saved config as its
    training step labels it: the burn-in's probability at the training size on the image (no
    augmentation) and the first expression, the store's best ``max_candidates`` candidates at
    that size, refinement, the candidates its rule selects, IoUs (at the training size) and
    verdict; the masks shown at the image's size."""
    cfg = load_config(run_dir / method / "config.yaml")
    rule, size = cfg.semi.refine, cfg.data.img_size
    index = load_index(cfg.data.spec())
    teacher = semires.load(cfg.semi.burn_in, device="cpu")
    store = ProposalStore.open(cfg.semi.proposals)
    out = {}
    for ref in read_split(cfg.data.split_dir, index).unlabeled_refs(index):
        image = index.load_image(ref.image_id)
        x = normalize(resize_image(image, size)[None], teacher.model.image_mean,
                      teacher.model.image_std)  # fmt: skip
        with torch.no_grad():
            logits = teacher.model(x, **teacher.text([ref.sentences[0].raw]))
        prob = logits.float().softmax(1)[0, 1].numpy()
        gt = resize_mask(index.mask(ref.object_id), size).numpy()
        P = prob > 0.5
        M = store.masks(ref.image_id, size=(size, size))[: cfg.semi.max_candidates].contiguous()
        res = strategy_labels(
            torch.from_numpy(P)[None],
            torch.from_numpy(prob)[None],
            M[None],
            torch.ones((1, len(M)), dtype=torch.bool),
            rule,
        )
        refined, matched = res.labels[0].numpy(), bool(res.matched[0])
        M = M.numpy()
        inter = np.logical_and(M, P).sum((1, 2))
        if rule.strategy == "iom":
            ious = inter / np.logical_or(M, P).sum((1, 2)).clip(min=1)
            selected = np.zeros(len(M), bool)
            selected[int(np.argmax(ious))] = matched
        else:
            r1, r2 = inter / max(P.sum(), 1), inter / M.sum((1, 2)).clip(min=1)
            selected = (r1 > rule.t1) | (r2 > rule.t2)
        before, after = iou(P, gt), iou(refined, gt)
        verdict = (
            "no match"
            if not matched
            else "helped"
            if after > before + 1e-6
            else "hurt"
            if after < before - 1e-6
            else "unchanged"
        )
        out[ref.id] = {
            "image_id": ref.image_id,
            "pseudo": resize_mask(P, image.shape[:2]).numpy(),
            "refined": resize_mask(refined, image.shape[:2]).numpy(),
            "selected": selected,
            "matched": matched,
            "iou_teacher": before,
            "iou_refined": after,
            "verdict": verdict,
        }
    return out


@pytest.fixture(scope="module")
def expected(run_dir):
    return {m: direct(run_dir, m) for m in ("iom", "cpi")}


# ------------------------------------------------------------------ errors
def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint not found: {tmp_path / 'nope.pt'}"


def test_without_gradio_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.pt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["serve", "--checkpoint", str(tmp_path / "model.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: semires serve needs gradio: pip install 'semires[serve]' (or pip install gradio)"
    )


def test_a_folder_that_is_not_a_run_is_refused(run_dir, tmp_path, capsys):
    pytest.importorskip("gradio")
    ckpt = str(run_dir / "cpi" / "best.pt")
    assert main(["serve", "--checkpoint", ckpt, "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not a semires run folder (no run.yaml")
    assert main(["serve", "--checkpoint", ckpt, "--run", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"error: run folder not found: {tmp_path / 'none'}"


def test_a_run_folder_of_another_model_is_refused(run_dir, tmp_path, capsys):
    """A checkpoint whose network differs from the run's (here: another decoder width)."""
    pytest.importorskip("gradio")
    from semires.model import ModelConfig, build_model
    from semires.runtime.checkpoint import load_checkpoint, model_state, save_checkpoint

    ck = load_checkpoint(run_dir / "cpi" / "best.pt")
    cfg = ModelConfig.from_dict(ck["model_config"]).replace(decoder_dim=8)
    other = tmp_path / "other.pt"
    save_checkpoint(
        other,
        {
            "model_config": cfg.to_dict(),
            "model": model_state(build_model(cfg))[0],
            "config": ck["config"],
        },
    )
    assert main(["serve", "--checkpoint", str(other), "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {other} is another model than the run folder {run_dir}")
    assert "(decoder_dim: 8 here, 16 in the run)" in err and "\n" not in err


# ------------------------------------------------------------------ the pseudo-label view
def test_pseudo_labels_match_a_direct_computation(run_dir, expected):
    from semires.serve.samples import RunView

    view = RunView.open(run_dir, device="cpu")
    assert view.methods == ["iom", "cpi"]
    for method, samples in expected.items():
        assert set(view.refs) == set(samples)
        for ref_id, want in samples.items():
            got = view.sample(method, ref_id)
            assert np.array_equal(got.pseudo, want["pseudo"])
            assert np.array_equal(got.refined, want["refined"])
            assert np.array_equal(got.selected, want["selected"]), (method, ref_id)
            assert got.matched == want["matched"] and got.verdict == want["verdict"]
            assert got.iou_teacher == pytest.approx(want["iou_teacher"], abs=1e-12)
            assert got.iou_refined == pytest.approx(want["iou_refined"], abs=1e-12)
            if got.matched:  # the refined label is made of the selected candidates
                union = got.candidates[got.selected].any(0)
                assert np.array_equal(union, got.refined)
        verdicts = [s["verdict"] for s in samples.values()]
        assert view.counts(method) == {}
        view.verdicts(method)
        assert sum(view.counts(method).values()) == len(verdicts)
        assert all(view.counts(method)[v] == verdicts.count(v) for v in set(verdicts))
    # the filters have something to tell apart
    assert len({s["verdict"] for s in expected["cpi"].values()}) >= 2


# ------------------------------------------------------------------ in a browser
def chromium() -> str | None:
    for name in (os.environ.get("SEMIRES_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def page(request):
    pytest.importorskip("gradio", reason="the web app needs gradio (pip install 'semires[serve]')")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need playwright (pip install playwright)"
    )
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    from semires.serve import create_app

    run_dir = request.getfixturevalue("run_dir")  # after the checks: a skip costs no run
    app = create_app(run_dir / "cpi" / "best.pt", run_dir, device="cpu")
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(30_000)
        tab.goto(app.local_url)
        tab.wait_for_selector("#seg-go")
        yield tab
        browser.close()
    app.close()


def read_masks(page) -> list[np.ndarray]:
    """The mask PNGs the page offers for download, in order, as bool arrays."""
    links = page.locator("#seg-files a[href]")
    out = []
    for i in range(links.count()):
        data = page.request.get(links.nth(i).get_attribute("href")).body()
        out.append(np.asarray(Image.open(io.BytesIO(data))) > 0)
    return out


def segment(page, texts: list[str], *, type_them: bool = True) -> list[np.ndarray]:
    """Press Segment (typing ``texts`` first) and wait for this call's masks."""
    if type_them:
        page.fill("#seg-text textarea", "\n".join(texts))
    page.click("#seg-go")
    page.wait_for_function(
        """texts => document.querySelectorAll('#seg-files a[href]').length === texts.length &&
            texts.every(t => document.querySelector('#seg-summary').innerText.includes(t))""",
        arg=texts,
    )
    return read_masks(page)


def test_segment_tab_returns_the_models_masks(page, run_dir, tmp_path):
    seg = semires.load(run_dir / "cpi" / "best.pt", device="cpu")
    index = load_index(load_config(run_dir / "cpi" / "config.yaml").data.spec())
    test = [r for s in ("testA", "testB") for r in index.refs_in(s)]
    # pick a test image: its expressions fill the text box (all segmented at once)
    page.click("#test-pick input")
    page.locator("[role=option]").nth(1).click()
    ref = test[1]
    texts = [s.raw for s in ref.sentences]
    page.wait_for_function(
        "t => document.querySelector('#seg-text textarea').value === t", arg="\n".join(texts)
    )
    masks = segment(page, texts, type_them=False)
    expect = seg.predict(index.load_image(ref.image_id), texts)
    assert len(masks) == len(texts) >= 2
    for got, mask in zip(masks, expect, strict=True):
        assert np.array_equal(got, mask)
    # upload an image and type two expressions
    other = test[-1]
    path = tmp_path / "upload.png"
    Image.fromarray(index.load_image(other.image_id)).save(path)
    page.set_input_files("#seg-image input[type=file]", str(path))
    page.wait_for_selector("#seg-image img[src*='upload']")
    texts = ["the red circle", "the cross"]
    masks = segment(page, texts)
    expect2 = seg.predict(index.load_image(other.image_id), texts)
    for got, mask in zip(masks, expect2, strict=True):
        assert np.array_equal(got, mask)
    assert all(0 < m.sum() < m.size for m in [*expect, *expect2])  # no trivial mask
    summary = page.locator("#seg-summary").inner_text()
    assert "2 expression(s), 96×96 image" in summary
    for text, mask in zip(texts, expect2, strict=True):
        assert re.search(rf"{text}\s+{int(mask.sum())}\s", summary), summary


def test_pseudo_label_tab_shows_the_computed_ious(page, expected):
    page.get_by_role("tab", name="Pseudo-labels").click()
    page.wait_for_selector("#pl-stats table")
    method = page.get_by_label("method")
    method.click()
    page.get_by_role("option", name="SemiRES-CPI").click()
    page.wait_for_function("document.querySelector('#pl-stats')?.innerText.includes('method cpi')")
    cpi = expected["cpi"]
    verdicts = [s["verdict"] for s in cpi.values()]
    for verdict in sorted(set(verdicts), key=verdicts.count)[:2]:  # the rarer ones
        page.locator("#pl-filter").get_by_label(verdict).check()
        page.wait_for_function(
            "v => document.querySelector('#pl-stats')?.innerText.startsWith(v) && "
            "document.querySelector('#pl-counts')?.innerText.includes('samples:')",
            arg=verdict,
        )
        counts = page.locator("#pl-counts").inner_text()
        assert f"{len(cpi)} samples: " in counts
        for v in set(verdicts):
            assert f"{v} {verdicts.count(v)}" in counts
        stats = page.locator("#pl-stats").inner_text()
        ref_id = int(re.search(r"ref (\d+):", stats).group(1))
        want = cpi[ref_id]
        assert want["verdict"] == verdict and "method cpi" in stats
        shown = [float(x) for x in re.findall(r"(-?\d+\.\d+)%", stats)]
        assert shown == pytest.approx(
            [100 * want["iou_teacher"], 100 * want["iou_refined"]], abs=0.005
        )
        assert f"selected: {int(want['selected'].sum())}" in stats
        # the sample list holds exactly the samples with that verdict
        page.locator("#pl-sample input").click()
        options = page.locator("[role=option]").all_inner_texts()
        page.keyboard.press("Escape")
        assert len(options) == verdicts.count(verdict)
        listed = {int(re.search(r"ref (\d+)", o).group(1)) for o in options}
        assert listed == {i for i, s in cpi.items() if s["verdict"] == verdict}
