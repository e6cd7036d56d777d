"""Cocktail Party Attack: unmixing learned on pixel differences ("edges") vs on the raw rows ("pixels").

One FedSGD gradient of n CIFAR-10 test images through an MLP (first layer of `width` units) is attacked
with both settings; prints the mean |correlation| of each image with its matched reconstruction.

    python benchmarks/cocktail_party_fit_on.py --images 8 --width 64 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from fl_privacy.attacks.cocktail_party import CocktailPartyConfig, cocktail_party, matched_correlation
from fl_privacy.attacks.threat import Observation
from fl_privacy.config import load_config
from fl_privacy.federation.run_setup import load_split
from fl_privacy.models import build_model


def one(data, images: int, width: int, seed: int, fit_on: str) -> float:
    x, y = data.batch(np.random.default_rng(seed).permutation(len(data))[:images], normalize=True)
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=32, width=width)
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    update = {name: g for (name, _), g in zip(model.named_parameters(), grads, strict=True)}
    obs = Observation(model=copy.deepcopy(model), global_params=dict(model.named_parameters()), global_buffers={},
                      update=update, kind="gradient", image_shape=(3, 32, 32), num_classes=10, mean=data.mean,
                      std=data.std, num_examples=images)
    result = cocktail_party(obs, CocktailPartyConfig(seed=seed, fit_on=fit_on))
    return float(matched_correlation(result.images, x)[0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    data = load_split(load_config(None, {"data.dataset": "cifar10"}), "test")
    for fit_on in ("pixels", "edges"):
        scores = [one(data, args.images, args.width, s, fit_on) for s in args.seeds]
        print(f"fit_on={fit_on}: mean |corr| {np.mean(scores):.3f} (per seed {', '.join(f'{v:.3f}' for v in scores)}), "
              f"{args.images} images, width {args.width}")


if __name__ == "__main__":
    main()
