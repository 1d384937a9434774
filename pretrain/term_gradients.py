"""Each objective's gradient norm at the backbone's outputs, read off the step's own backward pass.

Every objective reads the student's outputs through views of its own ("taps"). In the step's one
backward the gradient arriving at objective i's taps is c·wᵢ·∂Lᵢ/∂(outputs), where wᵢ is the
term's effective weight and c whatever scales the loss between ``training_step`` and ``backward``
(gradient accumulation's 1/k, AMP's loss scale). A hook on the loss Lᵢ itself receives exactly
c·wᵢ, so the ratio of the two is ‖∂Lᵢ/∂(outputs)‖ without knowing c or w.

Asking ``torch.autograd.grad`` for each term instead costs a second backward through every
objective's head before the real one: on an H200 that pass took 2.1 s of a 4.4 s pretraining step
(docs/benchmarks.md).
"""

from __future__ import annotations

import torch


class TermGradients:
    """Collects, during one backward, each named term's gradient norm at the tapped tensors.

    Per step: ``reset()``, then for each term ``tap(name, tensor)`` on every output it reads and
    ``watch(name, loss)`` on its loss; after the backward, ``norms()``."""

    def __init__(self, names):
        self.names = list(names)
        self.reset()

    def reset(self) -> None:
        self._squares: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        self._seeds: dict[str, torch.Tensor] = {}

    def tap(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A view of ``tensor`` for term ``name`` to read; its gradient is counted for that term."""
        if not tensor.requires_grad:
            return tensor
        view = tensor.view_as(tensor)
        squares = self._squares[name]

        def count(grad: torch.Tensor) -> None:
            squares.append(grad.detach().float().pow(2).sum())

        view.register_hook(count)
        return view

    def watch(self, name: str, loss: torch.Tensor) -> None:
        """Records the gradient that reaches the term's loss (c·wᵢ). A loss without a graph is
        left out: its norm is 0."""
        if name not in self._squares:
            raise KeyError(f"unknown term {name!r}; terms: {self.names}")
        if not loss.requires_grad:
            return

        def seed(grad: torch.Tensor) -> None:
            self._seeds[name] = grad.detach().float().reshape(())

        loss.register_hook(seed)

    def norms(self, device=None) -> torch.Tensor:
        """(len(names),) ‖∂Lᵢ/∂(tapped tensors)‖ of the last backward, in ``names`` order. A term
        whose loss got no gradient, or whose gradient never reached a tap, has norm 0; one whose
        seed was 0 (a weight of 0, or an underflowed loss scale) is not finite: its norm is unknown."""
        values = []
        for name in self.names:
            seed, squares = self._seeds.get(name), self._squares[name]
            if seed is None or not squares:
                values.append(torch.zeros((), device=device))
                continue
            norm = torch.stack(squares).sum().sqrt() / seed.abs()
            values.append(norm.to(device) if device is not None else norm)
        return torch.stack(values)
