"""Activation checkpointing (``ModelConfig.checkpoint_activations``, issue 32): the same outputs
and gradients as without it, with dropout and stochastic depth on, far fewer activations kept
for the backward pass, and nothing at all in eval mode."""

from __future__ import annotations

import pytest
import torch

from semires.errors import ConfigError
from semires.model import ModelConfig, build_model, get_model_config

pytestmark = pytest.mark.usefixtures("one_thread")

#: tolerance of the comparisons (float32): the recomputation runs the same kernels on the same
#: inputs, so on a CPU the results are in fact bit-identical (asserted separately below)
RTOL, ATOL = 1e-5, 1e-7


def _lavt_cfg(**overrides) -> ModelConfig:
    """``test-lavt`` (LAVT in miniature: Swin + a 2-layer BERT, layer 0 trained) with stochastic
    depth 0.3, BERT's dropout 0.1 (BertConfig's default) and fusion dropout 0.1: every source of
    randomness of a training step is on."""
    cfg = get_model_config("test-lavt")
    kwargs = {**cfg.backbone_kwargs, "drop_path_rate": 0.3}
    return cfg.replace(backbone_kwargs=kwargs, fusion_dropout=0.1, **overrides)


def _pair(cfg: ModelConfig, mode: str):
    torch.manual_seed(0)
    plain = build_model(cfg)
    ckpt = build_model(cfg, checkpoint_activations=mode)
    ckpt.load_state_dict(plain.state_dict())
    return plain, ckpt


def _inputs(model, size: int):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=g)
    target = torch.randint(0, 2, (2, size, size), generator=g)
    tokens = model.tokenize(["the man on the left in a red shirt", "a dog"])
    return images, target, tokens


def _step(model, images, target, tokens, seed: int = 123):
    """One training forward + backward with the RNG seeded: logits, input gradient, parameter
    gradients, and the activation bytes the autograd graph keeps for the backward pass (unique
    storages other than the weights)."""
    saved: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:  # activations, not the weights they are computed with
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    inp = images.clone().requires_grad_()
    torch.manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(inp, **tokens)
    torch.nn.functional.cross_entropy(logits, target).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), inp.grad, grads, sum(saved.values())


@pytest.mark.parametrize("mode", ["backbone", "backbone+text"])
def test_same_outputs_and_gradients_with_dropout_and_drop_path(mode):
    plain, ckpt = _pair(_lavt_cfg(), mode)
    images, target, tokens = _inputs(plain, 64)
    plain.train()
    ckpt.train()
    out_a, gin_a, grads_a, saved_a = _step(plain, images, target, tokens)
    out_b, gin_b, grads_b, saved_b = _step(ckpt, images, target, tokens)
    # the randomness is real: another seed gives other outputs (drop path, dropout)
    out_c = _step(plain, images, target, tokens, seed=7)[0]
    assert (out_a - out_c).abs().max() > 1e-3
    torch.testing.assert_close(out_b, out_a, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(gin_b, gin_a, rtol=RTOL, atol=ATOL)
    assert grads_a.keys() == grads_b.keys()
    assert any(n.startswith("text.") for n in grads_a)  # BERT's layer 0 is trained
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=RTOL, atol=ATOL, msg=name)
    # on a CPU the recomputation is bit-identical
    assert torch.equal(out_a, out_b) and torch.equal(gin_a, gin_b)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    # and it keeps fewer activations for the backward pass
    assert saved_b < 0.8 * saved_a, (saved_a, saved_b)


def test_text_checkpointing_keeps_fewer_activations():
    _, backbone_only = _pair(_lavt_cfg(), "backbone")
    _, with_text = _pair(_lavt_cfg(), "backbone+text")
    images, target, tokens = _inputs(with_text, 64)
    saved = [_step(m.train(), images, target, tokens)[3] for m in (backbone_only, with_text)]
    assert saved[1] < saved[0]


def test_no_effect_in_eval_or_without_gradients(monkeypatch):
    import torch.utils.checkpoint as tuc

    calls = []
    real = tuc.checkpoint
    monkeypatch.setattr(tuc, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain, ckpt = _pair(_lavt_cfg(), "backbone+text")
    images, target, tokens = _inputs(plain, 64)
    plain.eval()
    ckpt.eval()
    out_a, gin_a, grads_a, saved_a = _step(plain, images, target, tokens)
    out_b, gin_b, grads_b, saved_b = _step(ckpt, images, target, tokens)
    assert torch.equal(out_a, out_b) and torch.equal(gin_a, gin_b)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    assert saved_a == saved_b
    ckpt.train()
    with torch.no_grad():
        ckpt(images, **tokens)
    assert calls == []
    _step(ckpt, images, target, tokens)  # training with gradients: checkpointed
    assert calls


def test_convnext_and_frozen_stages(monkeypatch):
    """ConvNeXt stages are checkpointed too; a frozen stage that no gradient crosses is run
    plainly (nothing to recompute): with the whole backbone frozen that is stage 1 only, since
    the gated fusion after it feeds trained features into stages 2-4, whose blocks must then
    pass gradients back to it."""
    import torch.utils.checkpoint as tuc

    plain, ckpt = _pair(get_model_config("test-tiny"), "backbone")
    images, target, tokens = _inputs(plain, 64)
    a = _step(plain.train(), images, target, tokens)
    b = _step(ckpt.train(), images, target, tokens)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[2][n], b[2][n]) for n in a[2])
    assert b[3] < a[3]

    calls = []
    real = tuc.checkpoint
    monkeypatch.setattr(tuc, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    frozen = build_model("test-tiny", frozen_stages=4, checkpoint_activations="backbone").train()
    frozen(images, **tokens).mean().backward()
    assert len(calls) == 3  # one block in each of stages 2-4 of test-tiny, none in stage 1


def test_config_values():
    with pytest.raises(ConfigError, match="checkpoint_activations"):
        ModelConfig.from_dict({"checkpoint_activations": "swin"})
    cfg = ModelConfig.from_dict({"checkpoint_activations": "backbone+text"})
    assert cfg.to_dict()["checkpoint_activations"] == "backbone+text"
    assert ModelConfig.from_dict({}).checkpoint_activations == "none"  # older checkpoints
