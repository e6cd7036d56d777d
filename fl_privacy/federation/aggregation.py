"""Honest aggregation, one reply at a time (no list of all updates is built)."""

from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


class WeightedMean:
    """Running weighted mean of tensor dicts; integer tensors are rounded back to their dtype."""

    def __init__(self) -> None:
        self._sum: Tensors = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.total = 0.0

    def add(self, tensors: Tensors, weight: float) -> None:
        for name, value in tensors.items():
            contribution = value.detach().to(torch.float64) * weight
            if name in self._sum:
                self._sum[name] += contribution
            else:
                self._sum[name] = contribution
                self._dtypes[name] = value.dtype
        self.total += weight

    def result(self) -> Tensors:
        if not self.total:
            raise ValueError("no updates to aggregate")
        out = {}
        for name, value in self._sum.items():
            mean = value / self.total
            dtype = self._dtypes[name]
            out[name] = mean.round().to(dtype) if not dtype.is_floating_point else mean.to(dtype)
        return out
