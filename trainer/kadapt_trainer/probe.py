"""The linear probe: the task head fitted to convergence on cached backbone features.

With a frozen backbone, head-only training is a small convex problem (multinomial logistic
regression when the head is one Linear layer) on features computed once. A data scientist
solves it in full batch with L-BFGS and picks the L2 strength on held-out data; stopping a
stochastic optimiser after the few epochs that suit full fine-tuning leaves it far from the
optimum. This module does the former, in torch (the trainer image has no scikit-learn):

- the objective is scikit-learn's ``LogisticRegression`` objective divided by the number of
  examples: ``mean cross-entropy + ||W||^2 / (2 C n)`` over the weight matrices (biases are
  not penalised), so a ``C`` here means what it means there;
- every ``C`` of the grid is fitted in turn, from strong to weak regularisation, each fit
  warm-started from the previous one (a regularisation path), with full-batch L-BFGS and a
  strong-Wolfe line search, in float64;
- C is chosen on validation data by **the loss after temperature scaling**: each candidate's
  validation logits are rescaled by the one temperature that minimises their mean
  cross-entropy (Guo et al., 2017, "On Calibration of Modern Neural Networks"). The plain loss
  mixes how well the head separates the classes with how confident it is: stronger L2 shrinks
  the logits, so on normalised sentence embeddings the plain loss rewards weak regularisation
  for its confidence alone (it chose C = 10 where C = 1 classified better). The rescaled loss
  keeps the separation and leaves the confidence out, and unlike validation accuracy it does
  not move in steps of one example.
- scikit-learn's default ``C = 1`` is kept unless another C's rescaled loss is lower by more
  than one standard error of the paired per-example differences: a validation split of a
  hundred or so examples cannot tell apart Cs whose losses differ by less than their noise,
  and picking the noisy minimum anyway costs accuracy on average. Without validation data
  ``C = 1`` is used.
- The rule was compared on the quality benchmark's data (``benchmarks/probe_c_rules.py``,
  docs/benchmarks.md: random training draws at 12, 40 and 200 examples per class, mean test
  accuracy on 1,500 examples), against the plain minimum of the loss, the one-standard-error
  rule on it (the rule before), validation accuracy, the rescaled minimum alone, C = 1 and the
  best C in hindsight. The figures are in docs/benchmarks.md.

The same fit is the probe of ``auto`` (how well do the frozen features already serve the
task?) and the LP-FT start of partial, full and LoRA (Kumar et al., 2022: fine-tuning from a
converged linear probe distorts the pretrained features less than from a random head).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

#: Inverse L2 strengths tried, in scikit-learn's convention (C = 1 is its default).
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: C when there is no validation data to choose with (scikit-learn's default).
DEFAULT_C = 1.0
#: L-BFGS iterations per candidate when the caller sets none (each one a full pass over the cache).
DEFAULT_MAX_ITER = 200
#: Gradient tolerance of L-BFGS (the max-norm of the gradient of the mean loss).
GRAD_TOL = 1e-6
SELECTED_BY_VALIDATION = (
    "validation loss after temperature scaling: C = 1 unless another C is lower by more than one paired standard error"
)
#: Bounds of the fitted log inverse temperature (a separable validation split drives it up).
LOG_SCALE_BOUND = 10.0
SELECTED_BY_DEFAULT = "default C (no validation data)"


@dataclass(frozen=True)
class ProbeCandidate:
    """One point of the regularisation path."""

    c: float
    train_accuracy: float
    train_loss: float
    val_accuracy: float | None
    val_loss: float | None
    iterations: int
    #: Standard error of ``val_loss`` (the per-example losses' standard deviation / sqrt(n)).
    val_loss_se: float | None = None
    #: The temperature T that minimises the validation cross-entropy of logits / T.
    temperature: float | None = None
    #: Mean validation cross-entropy of logits / ``temperature``: what chooses C.
    val_loss_scaled: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    """The chosen fit and the path that led to it (recorded in ``kadapt-result.json``)."""

    c: float
    l2: float
    selected_by: str
    train_accuracy: float
    train_loss: float
    val_accuracy: float | None
    val_loss: float | None
    iterations: int
    max_iterations: int
    train_examples: int
    candidates: list[ProbeCandidate] = field(default_factory=list)
    #: The C of the lowest plain (not rescaled) validation loss, for the record.
    min_loss_c: float | None = None
    #: The C of the lowest rescaled validation loss, and by how much it beats the default C's
    #: (mean of the paired per-example differences) and that mean's standard error: it is
    #: chosen only when ``scaled_gain > scaled_gain_se``.
    scaled_min_c: float | None = None
    scaled_gain: float | None = None
    scaled_gain_se: float | None = None

    @property
    def gap(self) -> float | None:
        """Train minus validation accuracy: how much the probe overfits."""
        return None if self.val_accuracy is None else self.train_accuracy - self.val_accuracy

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``probe`` object of the result)."""
        out = asdict(self)
        out["regularization"] = "l2"
        return out


def _penalised(module: nn.Module) -> list[nn.Parameter]:
    """Weight matrices (not biases, not norms): what scikit-learn's L2 term covers."""
    return [p for p in module.parameters() if p.dim() >= 2]


def _metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """(accuracy, mean cross-entropy, standard error of that mean) of ``[n, classes]`` logits."""
    with torch.no_grad():
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        loss = float(losses.mean())
        se = float(losses.std(unbiased=True)) / math.sqrt(losses.numel()) if losses.numel() > 1 else 0.0
        acc = float((logits.argmax(-1) == y).double().mean())
    return acc, loss, se


def temperature_scaled_losses(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(T, per-example cross-entropy of ``logits / T``) at the T that minimises their mean.

    Args:
        logits: ``[n, classes]`` validation logits of one candidate head.
        y: ``[n]`` class ids.

    Returns:
        T and the ``[n]`` float64 losses. The mean is convex in 1/T; L-BFGS searches log(1/T)
        within ``LOG_SCALE_BOUND``. Non-finite logits give ``(nan, [nan] * n)``.
    """
    z = logits.detach().to(torch.float64)
    if not bool(torch.isfinite(z).all()):
        return math.nan, torch.full((z.size(0),), math.nan, dtype=torch.float64)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scale = log_scale.clamp(-LOG_SCALE_BOUND, LOG_SCALE_BOUND).exp()
        loss = nn.functional.cross_entropy(z * scale, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scale = log_scale.clamp(-LOG_SCALE_BOUND, LOG_SCALE_BOUND).exp()
        losses = nn.functional.cross_entropy(z * scale, y, reduction="none")
    return float(1.0 / scale), losses


@dataclass(frozen=True)
class Selection:
    """What :func:`select_c` decided: the index chosen and the evidence (see ``ProbeResult``)."""

    chosen: int
    scaled_min: int | None = None
    gain: float | None = None
    gain_se: float | None = None


def select_c(candidates: list[ProbeCandidate], losses: list[torch.Tensor]) -> Selection:
    """The default C unless another candidate's rescaled validation loss is clearly lower.

    Args:
        candidates: the path, sorted by increasing C, each with ``val_loss_scaled``.
        losses: each candidate's per-example rescaled validation losses (``[n]`` each).

    Returns:
        The candidate of the lowest rescaled loss (ties: the smaller C) when its paired gain
        over the ``DEFAULT_C`` candidate exceeds one standard error, else the default (or,
        without a default C in the grid, the lowest). NaN losses are left out; when all are
        NaN the most regularised candidate is kept, so training's NaN check names the cause.

    Raises:
        ValueError: when no candidate was scored on validation data.
    """
    if all(cand.val_loss_scaled is None for cand in candidates):
        raise ValueError("select_c: no candidate has a validation loss")
    scored = [i for i, c in enumerate(candidates) if c.val_loss_scaled is not None and math.isfinite(c.val_loss_scaled)]
    if not scored:
        return Selection(min(range(len(candidates)), key=lambda i: candidates[i].c))
    best = min(scored, key=lambda i: (candidates[i].val_loss_scaled or 0.0, candidates[i].c))
    default = next((i for i in scored if candidates[i].c == DEFAULT_C), None)
    if default is None or default == best:
        return Selection(best, best, 0.0 if default == best else None, None)
    diff = losses[default] - losses[best]
    gain = float(diff.mean())
    se = float(diff.std(unbiased=True)) / math.sqrt(diff.numel()) if diff.numel() > 1 else math.inf
    return Selection(best if gain > se else default, best, gain, se)


def _lowest_plain_loss(candidates: list[ProbeCandidate]) -> float | None:
    """The C of the lowest finite plain validation loss (recorded beside the chosen one)."""
    scored = [c for c in candidates if c.val_loss is not None and math.isfinite(c.val_loss)]
    return min(scored, key=lambda c: (c.val_loss or 0.0, c.c)).c if scored else None


def _fit_one(module: nn.Module, x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> int:
    """Full-batch L-BFGS on mean cross-entropy + l2/2 ||W||^2; returns the iterations used."""
    params = [p for p in module.parameters() if p.requires_grad]
    penalised = _penalised(module)
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=GRAD_TOL,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(module(x), y)
        if l2 > 0 and penalised:
            loss = loss + 0.5 * l2 * sum((p * p).sum() for p in penalised)
        loss.backward()
        return loss

    optimizer.step(closure)
    state = optimizer.state[params[0]] if params else {}
    return int(state.get("n_iter", 0))


def fit_probe(
    head: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    c_grid: tuple[float, ...] = DEFAULT_C_GRID,
    max_iter: int = DEFAULT_MAX_ITER,
) -> ProbeResult:
    """Fit ``head`` in place to convergence on cached features; choose C on validation data.

    Args:
        head: the task head (any module mapping features to logits; for a Linear head the
            problem is exactly multinomial logistic regression). Its weights are replaced.
        train_x, train_y: cached training features and class ids.
        val_x, val_y: cached validation features and class ids; without them ``DEFAULT_C``.
        c_grid: inverse regularisation strengths to try (scikit-learn's C); the one chosen has
            the lowest validation loss after temperature scaling (``select_c``).
        max_iter: L-BFGS iterations per candidate (each is one full pass over the features).

    Returns:
        The chosen C, its metrics and the whole path.

    Raises:
        ValueError: on empty training features or an empty grid.
    """
    n = int(train_y.numel())
    if n == 0:
        raise ValueError("fit_probe: no training features")
    if not c_grid:
        raise ValueError("fit_probe: c_grid is empty")
    has_val = val_x is not None and val_y is not None and int(val_y.numel()) > 0
    grid = sorted(set(c_grid)) if has_val else [DEFAULT_C]
    dtype = next(head.parameters()).dtype
    work = copy.deepcopy(head).to(device=train_x.device, dtype=torch.float64)
    work.eval()  # dropout off: L-BFGS needs a deterministic objective
    for p in work.parameters():
        p.requires_grad_(True)
    x = train_x.to(torch.float64)
    y = train_y.to(torch.long)
    vx = val_x.to(device=x.device, dtype=torch.float64) if has_val and val_x is not None else None
    vy = val_y.to(device=x.device, dtype=torch.long) if has_val and val_y is not None else None

    candidates: list[ProbeCandidate] = []
    scaled_losses: list[torch.Tensor] = []
    states: list[dict[str, torch.Tensor]] = []
    for c in grid:
        iterations = _fit_one(work, x, y, 1.0 / (c * n), max_iter)
        with torch.no_grad():
            train_acc, train_loss, _ = _metrics(work(x), y)
        val_acc = val_loss = val_se = temperature = scaled = None
        if vx is not None and vy is not None:
            with torch.no_grad():
                val_logits = work(vx)
            val_acc, val_loss, val_se = _metrics(val_logits, vy)
            temperature, per_example = temperature_scaled_losses(val_logits, vy)
            scaled = float(per_example.mean())
            scaled_losses.append(per_example)
        candidates.append(
            ProbeCandidate(c, train_acc, train_loss, val_acc, val_loss, iterations, val_se, temperature, scaled)
        )
        states.append({k: v.detach().clone() for k, v in work.state_dict().items()})

    min_loss_c = None
    selection = Selection(0)
    if has_val:
        selection = select_c(candidates, scaled_losses)
        min_loss_c = _lowest_plain_loss(candidates)
    best = selection.chosen
    chosen = candidates[best]
    head.load_state_dict({k: v.to(dtype) for k, v in states[best].items()})
    return ProbeResult(
        c=chosen.c,
        l2=1.0 / (chosen.c * n),
        selected_by=SELECTED_BY_VALIDATION if has_val else SELECTED_BY_DEFAULT,
        train_accuracy=chosen.train_accuracy,
        train_loss=chosen.train_loss,
        val_accuracy=chosen.val_accuracy,
        val_loss=chosen.val_loss,
        iterations=chosen.iterations,
        max_iterations=max_iter,
        train_examples=n,
        candidates=candidates,
        min_loss_c=min_loss_c,
        scaled_min_c=None if selection.scaled_min is None else candidates[selection.scaled_min].c,
        scaled_gain=selection.gain,
        scaled_gain_se=selection.gain_se,
    )


@dataclass
class ProbeOutcome:
    """The probe of a job: the fit, the cached features it was fitted on, and what it cost.

    ``seconds`` and ``tokens`` time the backbone's forward pass over the data, which is how
    ``auto`` measures this machine's throughput for its cost projections.
    """

    result: ProbeResult
    train_features: torch.Tensor
    train_labels: torch.Tensor
    val_features: torch.Tensor | None
    val_labels: torch.Tensor | None
    seconds: float
    tokens: int


def run_probe(
    model: nn.Module,
    train: Any,
    validation: Any | None,
    pad_id: int,
    info: Any,
    device: torch.device,
    max_iter: int = DEFAULT_MAX_ITER,
) -> ProbeOutcome:
    """Cache the head's input features of a classifier, then fit its head (in place) on them.

    Args:
        model: the classifier with its new head, before any strategy is applied.
        train, validation: ``data.Encoded`` splits with class ids.
        pad_id, info, device: as for ``features.extract_features``.
        max_iter: L-BFGS iterations per L2 candidate (``training.epochs`` for head-only).
    """
    import time

    from kadapt_trainer.config import Task
    from kadapt_trainer.features import extract_features
    from kadapt_trainer.strategies import find_head

    if info.world_size > 1:  # ranks share their feature slices: the group must exist (idempotent)
        from kadapt_trainer.engine import init_process_group

        init_process_group()
    _, head = find_head(model, Task.SEQUENCE_CLASSIFICATION)
    model.to(device)
    start = time.perf_counter()
    train_x = extract_features(model, head, train, pad_id, info, device)
    val_x = val_y = None
    tokens = sum(len(ids) for ids in train.input_ids)
    if validation is not None and len(validation):
        val_x = extract_features(model, head, validation, pad_id, info, device)
        val_y = torch.tensor(validation.labels, dtype=torch.long)
        tokens += sum(len(ids) for ids in validation.input_ids)
    seconds = time.perf_counter() - start
    train_y = torch.tensor(train.labels, dtype=torch.long)
    result = fit_probe(head, train_x.cpu(), train_y, None if val_x is None else val_x.cpu(), val_y, max_iter=max_iter)
    return ProbeOutcome(result, train_x, train_y, val_x, val_y, seconds, tokens)
