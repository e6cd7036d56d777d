"""GIA-O arithmetic: strict float32 by default (TF32 off, flags restored), opt-in tf32 / bf16, and a
compiled loss that gives the eager numbers."""

from __future__ import annotations

import pytest
import torch

from fl_privacy.attacks.gia import preset
from fl_privacy.attacks.gia.engine import reconstruct_victims
from fl_privacy.attacks.gia.precision import attack_precision, precision_note
from fl_privacy.config.attack_schema import GIAOptions
from tests.test_gia_batching import _victims


def test_float32_turns_tf32_off_inside_and_restores_the_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: cuDNN may use TF32
    try:
        with attack_precision("float32", torch.device("cpu")):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert not torch.is_autocast_enabled("cpu")
        with attack_precision("tf32", torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with attack_precision("bf16", torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu")
            assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    with pytest.raises(ValueError, match="precision must be one of"), attack_precision("fp16", torch.device("cpu")):
        pass


def test_reduced_precision_is_noted_and_tf32_is_float32_on_a_cpu():
    observations = [obs for obs, _, _ in _victims(1)]
    runs = {p: reconstruct_victims(observations, preset("inverting_gradients", labels="known", iterations=15,
                                                        precision=p), device="cpu")[0]
            for p in ("float32", "tf32", "bf16")}
    assert not any("precision" in n or "bf16" in n for n in runs["float32"].notes)
    assert runs["tf32"].objective == runs["float32"].objective  # no TF32 off a CUDA device
    assert precision_note("tf32", torch.device("cpu")) in runs["tf32"].notes
    assert any("bf16 autocast" in n for n in runs["bf16"].notes)
    assert torch.isfinite(runs["bf16"].images).all()
    assert runs["bf16"].objective != runs["float32"].objective  # it did run in bf16 ...
    assert runs["bf16"].objective == pytest.approx(runs["float32"].objective, rel=0.5)  # ... on the same problem


def test_compiled_loss_gives_the_eager_iterations():
    observations = [obs for obs, _, _ in _victims(2)]
    cfg = preset("inverting_gradients", labels="known", iterations=6, restarts=2, batching="vmap")
    eager = reconstruct_victims(observations, cfg, device="cpu")
    compiled = reconstruct_victims(observations, preset("inverting_gradients", labels="known", iterations=6,
                                                        restarts=2, batching="vmap", compile=True), device="cpu")
    for a, b in zip(eager, compiled):
        assert not any("compile failed" in n for n in b.notes)
        assert b.restart_objectives == pytest.approx(a.restart_objectives, rel=1e-4)
        torch.testing.assert_close(b.images, a.images, rtol=1e-4, atol=1e-4)


def test_precision_and_compile_are_config_settings():
    settings = GIAOptions(precision="bf16", compile=True)
    assert settings.precision == "bf16" and settings.compile is True
    with pytest.raises(ValueError):
        GIAOptions(precision="fp16")
