"""The GIA-O optimisation loop: Adam (optionally signed) or L-BFGS on the candidate images.

Every row (one restart of one victim) is its own problem; the optimised loss is
the sum over rows, so Adam (element-wise) gives each row the steps it would get
alone. ``BestIterate`` keeps each row's best iterate and stops stalled rows.
No host syncs in the hot loop (Adam): the per-row loss is written into a device
tensor on the logged iterations (``tracing``). With ``cuda_graph``, one
iteration is captured as a CUDA graph after ``GRAPH_WARMUP`` eager ones and
replayed; the lr schedule then runs on a stand-in optimiser and its lr is copied
into the device tensor the graph reads. L-BFGS (``torch.optim.LBFGS``) reads the
loss on the host by its design.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fl_privacy.attacks.gia.options import GIAConfig
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.stopping import BestIterate
from fl_privacy.attacks.gia.tracing import log_step, logged_iterations, lr_scheduler

__all__ = ["GRAPH_WARMUP", "Candidates", "LoopOutcome", "optimise", "uses_cuda_graph"]

GRAPH_WARMUP = 3
"""Eager iterations (on a side stream) before a CUDA graph of the iteration is captured."""


@dataclass
class Candidates:
    """The optimised variables of all rows (restarts x victims, victim-major) and the labels they go with."""

    x: torch.Tensor
    """(rows, B, C, H, W) candidate images."""
    hard: torch.Tensor | None
    """(rows, B) class ids given or inferred; None when the labels are optimised ("joint")."""
    logits: torch.Tensor | None
    """(rows, B, K) free logits of the soft labels ("joint"), else None."""

    @property
    def variables(self) -> list[torch.Tensor]:
        return [self.x] if self.logits is None else [self.x, self.logits]

    def labels(self, logit_values: torch.Tensor | None) -> torch.Tensor:
        """The hard labels, or the soft labels of the given logits."""
        return self.hard if logit_values is None else torch.softmax(logit_values, dim=-1)


@dataclass
class LoopOutcome:
    """What the loop leaves: the returned iterate, the trace and how long each row ran."""

    final: list[torch.Tensor]
    """The iterate to score and return ("best" or "last"): images, then the logits for "joint"."""
    trace: torch.Tensor
    """(n_logged, rows) optimised loss on the device."""
    logged: list[int]
    steps: int
    """Iterations run (fewer than the budget when every row stopped early)."""
    used: torch.Tensor
    """(rows,) iterations each row ran."""
    start: float
    """``time.perf_counter()`` when the loop started."""


def uses_cuda_graph(cfg: GIAConfig, device: torch.device) -> bool:
    return cfg.cuda_graph and device.type == "cuda" and cfg.optimizer == "adam"


def _optimiser(
    cfg: GIAConfig, variables: list[torch.Tensor], device: torch.device, graphed: bool,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None, torch.Tensor | None]:
    """(optimiser, lr scheduler or None, device lr the graph reads or None)."""
    lr_now = torch.tensor(cfg.lr, device=device) if graphed else None  # the graph reads the lr from here
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(variables, lr=lr_now if graphed else cfg.lr, capturable=graphed)
    else:
        opt = torch.optim.LBFGS(variables, lr=cfg.lr)
    # with a graph, the schedule runs on a stand-in optimiser and its lr is copied into ``lr_now``
    scheduler = lr_scheduler(torch.optim.SGD([torch.zeros(1)], lr=cfg.lr) if graphed else opt, cfg)
    return opt, scheduler, lr_now


class _Iteration:
    """One optimiser step with its bookkeeping; only in-place updates of state (CUDA-graph capturable)."""

    def __init__(self, problem: GIAProblem, cand: Candidates, cfg: GIAConfig, opt: torch.optim.Optimizer,
                 tracker: BestIterate, box: tuple[torch.Tensor, torch.Tensor], graphed: bool) -> None:
        self.problem, self.cand, self.cfg, self.opt, self.tracker = problem, cand, cfg, opt, tracker
        self.lo, self.hi = box
        self.graphed = graphed
        self.evaluations: list[torch.Tensor] = []  # the optimised loss at each evaluation of this iteration
        self.counter = torch.zeros((), dtype=torch.long, device=problem.device)  # the iteration (graph-safe)

    def closure(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=not self.graphed)
        total, _ = self.problem.loop_evaluate(self.cand.x, self.cand.labels(self.cand.logits))
        loss = total.sum()
        loss.backward()
        self.evaluations.append(total.detach())
        return loss

    def __call__(self) -> torch.Tensor:
        variables = self.cand.variables
        before = [v.detach().clone() for v in variables]
        self.evaluations.clear()
        if self.cfg.optimizer == "adam":
            self.closure()
            if self.cfg.signed:
                self.cand.x.grad.sign_()
            self.opt.step()
        else:
            self.opt.step(self.closure)  # L-BFGS: its first evaluation is at ``before``, then its line search moves on
        self.tracker.update(self.counter, before, self.evaluations[0])
        if self.cfg.boxed:
            with torch.no_grad():
                self.cand.x.clamp_(min=self.lo, max=self.hi)
        self.tracker.freeze(variables, before)
        self.counter.add_(1)
        return self.evaluations[-1]


def optimise(problem: GIAProblem, cand: Candidates, cfg: GIAConfig, box: tuple[torch.Tensor, torch.Tensor],
             progress: bool = False) -> LoopOutcome:
    """Run the attack's iterations on ``cand`` in place; ``box`` = (lo, hi) of the pixels, (1, 1, C, 1, 1)."""
    variables = cand.variables
    graphed = uses_cuda_graph(cfg, problem.device)
    opt, scheduler, lr_now = _optimiser(cfg, variables, problem.device, graphed)
    logged = logged_iterations(cfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), cand.x.shape[0]), float("nan"), device=problem.device)
    tracker = BestIterate(variables, cfg.early_stop_window, cfg.early_stop_tol)
    bar = None
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=cfg.iterations, desc="GIA", leave=False)
    iteration = _Iteration(problem, cand, cfg, opt, tracker, box, graphed)
    start = time.perf_counter()
    steps, replay = 0, None
    for it in range(cfg.iterations):
        if graphed:
            lr_now.fill_(scheduler.optimizer.param_groups[0]["lr"] if scheduler is not None else cfg.lr)
            if replay is None and it == GRAPH_WARMUP:
                replay = _capture(iteration)
        total = replay() if replay is not None else _warm(iteration, graphed)
        if scheduler is not None:
            if graphed:
                scheduler.optimizer.step()  # the stand-in (no gradients: a no-op), so the scheduler keeps count
            scheduler.step()
        log_step(it, total, trace, slot, bar, cfg.iterations)
        steps = it + 1
        if tracker.all_done(it):
            break
    if bar is not None:
        bar.close()
    final = tracker.best if cfg.return_iterate == "best" else [v.detach() for v in variables]
    return LoopOutcome(final=final, trace=trace, logged=logged, steps=steps, used=tracker.used, start=start)


def _warm(iteration: Callable[[], torch.Tensor], graphed: bool) -> torch.Tensor:
    """One eager iteration; before a capture, on a side stream as CUDA graphs require."""
    if not graphed:
        return iteration()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        total = iteration()
    torch.cuda.current_stream().wait_stream(side)
    return total


def _capture(iteration: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture one iteration as a CUDA graph; returns a function that replays it and gives its loss."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_total = iteration()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_total

    return replay
