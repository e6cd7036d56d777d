"""DenseNet-43/53 and their connection-reduced variants (SoK Fig. 14), and the MLP (Cocktail Party Attack)."""

from __future__ import annotations

import pytest
import torch

from fl_privacy.config import load_config
from fl_privacy.models import build_model, count_parameters
from fl_privacy.models.densenet import DenseBlock, sources

# Ju et al. 2022 (the SoK's ref. [74]), README of github.com/RuiyangJu/Connection_Reduction: #Params (M)
PAPER_PARAMS_M = {
    ("densenet43", "dense"): 2.17, ("densenet43", "shortnet1"): 1.59, ("densenet43", "shortnet2"): 0.97,
    ("densenet53", "dense"): 3.15, ("densenet53", "shortnet1"): 2.16, ("densenet53", "shortnet2"): 1.20,
}


def densenet(name: str, connections: str, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=3, image_size=32, connections=connections, **options)


@pytest.mark.parametrize(("name", "connections"), sorted(PAPER_PARAMS_M))
def test_named_variants_have_the_papers_parameter_counts(name: str, connections: str) -> None:
    params = count_parameters(densenet(name, connections))
    assert round(params / 1e6, 2) == PAPER_PARAMS_M[(name, connections)]


def test_connection_patterns_match_the_reference_code() -> None:
    # concatenations written out in the reference code (DenseNet43_sht1/2.py, block of 12 layers)
    assert sources("dense", 5) == (1, 2, 3, 4, 5)
    assert [sources("shortnet1", k) for k in (4, 7, 8)] == [(1, 3, 4), (1, 2, 4, 6, 7), (1, 3, 5, 7, 8)]
    assert [sources("shortnet2", k) for k in (3, 4, 8, 12, 16)] == [
        (2, 3), (1, 3, 4), (1, 5, 7, 8), (5, 9, 11, 12), (1, 9, 13, 15, 16)]


def test_reduced_variants_drop_connections() -> None:
    edges = {c: sum(len(sources(c, k)) for k in range(1, 13)) for c in ("dense", "shortnet1", "shortnet2")}
    assert edges["dense"] > edges["shortnet1"] > edges["shortnet2"]


@pytest.mark.parametrize("connections", ["dense", "shortnet1", "shortnet2"])
def test_each_layer_reads_exactly_its_sources(connections: str) -> None:
    """Captured inputs of each conv are the concatenation of exactly the listed earlier outputs."""
    model = densenet("densenet43", connections, width=8, growth_rate=4).eval()
    block: DenseBlock = model.blocks()[1]
    inputs, outputs = [], []

    def capture(_module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        inputs.append(args[0])
        outputs.append(out.relu())

    hooks = [conv.register_forward_hook(capture) for conv in block.convs]
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    for k, link in enumerate(block.links[:-1], start=1):
        expected = torch.cat([outputs[j - 1] for j in link], dim=1)
        torch.testing.assert_close(inputs[k], expected)
        assert block.convs[k].in_channels == 4 * len(link)


@pytest.mark.parametrize("name", ["densenet43", "densenet53"])
def test_densenet_shapes_and_growth(name: str) -> None:
    model = densenet(name, "shortnet2", width=8, growth_rate=4)
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    assert all(conv.out_channels == 4 for b in model.blocks() for conv in b.convs)
    assert len(model.blocks()) == 4
    assert sum(len(b.convs) for b in model.blocks()) == {"densenet43": 38, "densenet53": 46}[name]


def test_config_accepts_densenet_switches_and_rejects_bad_ones() -> None:
    config = load_config(None, {"model.name": "densenet43", "model.connections": "shortnet1", "model.growth_rate": 8})
    assert config.model.options() == {"connections": "shortnet1", "growth_rate": 8}
    with pytest.raises(Exception, match="connections"):
        load_config(None, {"model.name": "densenet43", "model.connections": "sparse"})


def test_mlp_first_layer_is_fully_connected_and_width_sets_its_units() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=8, width=12)
    assert isinstance(model.features.fc, torch.nn.Linear)
    assert tuple(model.features.fc.weight.shape) == (12, 3 * 8 * 8)
    assert model(torch.rand(5, 3, 8, 8)).shape == (5, 10)
    assert count_parameters(model) == 12 * 192 + 12 + 10 * 12 + 10
