"""GradDefense, vector part: risk-balanced slicing, random slice perturbation, RMT compensation.

Wang et al., INFOCOM 2022, sec. 4.B (Algorithm 1) and sec. 5.A-B (Eqs. 4-5); see
``fl_privacy.defenses.graddefense`` for the method and the reference code's defects avoided here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# --------------------------------------------------------------------------- 2. slicing


def sensitivity_slices(sizes: Sequence[int], sensitivity: torch.Tensor | Sequence[float], num_slices: int) -> torch.Tensor:
    """Boundaries ``b_0 = 0 < b_1 < ... < b_S = N`` of S contiguous, risk-balanced slices.

    Element ``j`` of tensor ``l`` carries ``e_l = s_l / numel_l``; with ``c_j`` the
    cumulative risk *before* ``j`` and ``m_j = c_j + e_j / 2`` its midpoint, element ``j``
    belongs to slice ``k`` iff ``k T / S <= m_j < (k+1) T / S`` (``T`` the total risk,
    the last slice closed). So slice ``k`` starts at the first element whose midpoint
    reaches ``t_k = k T / S``; inside tensor ``l`` (offset ``o_l``, cumulative risk
    ``C_l`` before it) that is ``o_l + ceil((t_k - C_l) / e_l - 1/2)`` -- closed form,
    O(L + S), no per-element work, any sizes (primes fine). Each slice's risk differs
    from ``T / S`` by at most about one element's risk ``max_l e_l`` (half an element at
    each end).

    Slices are then made non-empty (``b_k >= b_{k-1} + 1``, ``b_k <= N - S + k``), which
    only moves a boundary when a single element carries more than ``T / S``. All-zero
    (or non-finite) risk falls back to size-balanced slices (the paper's sec. 6.C
    "layer size" baseline). Returns an int64 tensor of length ``S + 1``.
    """
    sizes_t = torch.as_tensor(list(sizes), dtype=torch.float64)
    total_n = int(sizes_t.sum().item())
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if total_n < num_slices:
        raise ValueError(f"cannot cut {total_n} elements into {num_slices} non-empty slices")
    sens = torch.as_tensor(sensitivity, dtype=torch.float64).reshape(-1).clamp_min(0.0)
    if sens.numel() != sizes_t.numel():
        raise ValueError(f"{sens.numel()} sensitivities for {sizes_t.numel()} tensors")
    total = float(sens.sum())
    if not math.isfinite(total) or total <= 0.0:
        sens = sizes_t.clone()  # size-balanced fallback: every element weighs 1
        total = float(sens.sum())

    per_elem = sens / sizes_t  # e_l
    offsets = torch.cumsum(sizes_t, 0) - sizes_t  # o_l
    cum_before = torch.cumsum(sens, 0) - sens  # C_l
    last_mid = cum_before + sens - per_elem / 2  # midpoint of each tensor's last element
    last_mid = torch.cummax(last_mid, dim=0).values  # nondecreasing in exact arithmetic; guard rounding
    targets = torch.arange(1, num_slices, dtype=torch.float64) * (total / num_slices)

    layer = torch.searchsorted(last_mid, targets, side="left")  # first tensor reaching t_k
    beyond = layer >= sizes_t.numel()
    layer_c = layer.clamp(max=sizes_t.numel() - 1)
    e = per_elem[layer_c]
    local = torch.where(
        e > 0,
        torch.ceil((targets - cum_before[layer_c]) / torch.where(e > 0, e, 1.0) - 0.5),
        torch.zeros_like(e),
    )
    local = torch.minimum(local.clamp_min(0.0), sizes_t[layer_c] - 1)
    inner = torch.where(beyond, torch.full_like(local, total_n), offsets[layer_c] + local).to(torch.int64)

    bounds = torch.cat([torch.zeros(1, dtype=torch.int64), inner, torch.tensor([total_n], dtype=torch.int64)])
    # non-empty slices: b_k >= b_{k-1} + 1 (running max of b_k - k) and room left for the rest
    k = torch.arange(num_slices + 1, dtype=torch.int64)
    bounds = torch.cummax(bounds - k, dim=0).values + k
    bounds = torch.minimum(bounds, total_n - num_slices + k)
    bounds[0], bounds[-1] = 0, total_n
    return bounds


# --------------------------------------------------------------------------- 3. perturbation


def reservoir_sample(population: int, k: int, generator: torch.Generator) -> list[int]:
    """Vitter's Algorithm R (paper Algorithm 1, ``Slice_selector``): k of ``range(population)``.

    Reservoir ``A = [0..k-1]``; for ``i = k..population-1`` draw ``j`` uniformly from
    ``[0, i]`` and set ``A[j] = i`` when ``j < k``. Every k-subset is equally likely; the
    O(population) loop runs over slices (a handful), not elements. Returned sorted.
    """
    if not 0 <= k <= population:
        raise ValueError(f"cannot sample {k} of {population}")
    reservoir = list(range(k))
    for i in range(k, population):
        j = int(torch.randint(0, i + 1, (1,), generator=generator).item())
        if j < k:
            reservoir[j] = i
    return sorted(reservoir)


def add_slice_noise(
    flat: torch.Tensor, bounds: torch.Tensor, chosen: Sequence[int], sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """``flat`` plus N(0, sigma^2) on every element of the chosen slices, each exactly once.

    Noise is drawn on the generator's device in one call (chosen slices in increasing
    order) and moved to ``flat``'s device, so results do not depend on the device.
    """
    out = flat.clone()
    chosen = sorted({int(c) for c in chosen})
    if not chosen or sigma == 0:
        return out
    spans = [(int(bounds[c]), int(bounds[c + 1])) for c in chosen]
    total = sum(b - a for a, b in spans)
    dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
    noise = torch.randn(total, generator=generator, device=generator.device, dtype=dtype)
    noise = (noise * sigma).to(device=flat.device, dtype=flat.dtype)
    at = 0
    for a, b in spans:  # one vectorised add per chosen slice (slices are disjoint)
        out[a:b] += noise[at : at + b - a]
        at += b - a
    return out


# --------------------------------------------------------------------------- 4. compensation


def aggregate_noise_variance(
    sigma: float, perturbed: int, slices: int, num_clients: int | None = None, weights: Sequence[float] | None = None
) -> float:
    """Per-element noise variance of the aggregated update.

    Client i adds to element j the noise ``xi_ij = b_ij z_ij`` with ``z_ij ~ N(0, sigma^2)``
    and ``b_ij`` = 1 iff j's slice is among the P of S chosen (uniform P-subset, so
    ``P(b_ij = 1) = P / S``); thus ``E xi_ij = 0`` and ``Var xi_ij = (P/S) sigma^2``. Clients
    draw independently, so the weighted mean ``sum_i w_i xi_ij`` (``sum_i w_i = 1``) has
    variance ``(P/S) sigma^2 sum_i w_i^2``, i.e. ``(P/S) sigma^2 / N`` for equal weights.
    (The reference's ``N (P/S) sigma^2`` is N^2 times too large for a mean.)
    """
    if weights is not None:
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        w = w / w.sum()
        factor = float((w**2).sum())
    else:
        if not num_clients or num_clients < 1:
            raise ValueError("give num_clients >= 1 or weights")
        factor = 1.0 / num_clients
    return (perturbed / slices) * sigma**2 * factor


def matrix_shape(n: int, q: float) -> tuple[int, int]:
    """``(v, w)`` with ``v * w <= n``, ``v / w ~ q`` (>= q), ``n - v*w < w``: never degenerate for primes."""
    if n <= 0:
        return 0, 0
    w = max(1, math.isqrt(int(n / q)) if n >= q else 1)
    while w > 1 and (n // w) < q * w:  # guard the float/isqrt rounding
        w -= 1
    return n // w, w


def marchenko_pastur_edges(noise_var: float, q: float) -> tuple[float, float]:
    """Bulk edges ``lambda_(-/+) = s2 (1 -/+ 1/sqrt(Q))^2`` of ``R^T R / v`` for i.i.d. entries (paper Eq. 4)."""
    root = 1.0 / math.sqrt(q)
    return noise_var * (1.0 - root) ** 2, noise_var * (1.0 + root) ** 2


def compensate(vector: torch.Tensor, noise_var: float, q: float = 6.0) -> torch.Tensor:
    """Random-matrix compensation of a noisy aggregate (paper sec. 5.B, Eqs. 4-5).

    The first ``v*w`` elements (row-major) form ``C`` (``v x w``, :func:`matrix_shape`);
    ``C^T C / v = P Lambda P^T`` (uncentred, as the paper's ``L_C``); eigenvalues inside
    the Marchenko-Pastur bulk for variance ``noise_var`` and ratio ``Q_eff = v / w`` are
    noise, the others (above ``lambda_+`` = signal spikes, or below ``lambda_-``, as the
    paper keeps everything outside ``[lambda_min, lambda_max]``) span the data subspace
    ``P_Z``; returns ``C P_Z P_Z^T`` followed by the untouched remainder, same shape and
    dtype as ``vector``. ``noise_var <= 0`` or fewer than two columns: unchanged.
    Cost: one ``v x w`` by ``w x w`` product twice and a ``w x w`` eigh (float64).
    """
    flat = vector.reshape(-1)
    v, w = matrix_shape(flat.numel(), q)
    if noise_var <= 0 or w < 2:
        return vector.clone()
    mat = flat[: v * w].reshape(v, w).to(torch.float64)
    evals, evecs = torch.linalg.eigh(mat.T @ mat / v)
    lo, hi = marchenko_pastur_edges(noise_var, v / w)
    basis = evecs[:, (evals > hi) | (evals < lo)]
    compensated = (mat @ basis) @ basis.T
    out = flat.clone()
    out[: v * w] = compensated.reshape(-1).to(flat.dtype)
    return out.reshape(vector.shape)
