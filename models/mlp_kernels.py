"""The actor-critic's fast paths: the same MLP functions as ``nn.Sequential(Linear, Tanh, ...)``, computed
with fewer dispatches. The model's meaning is in ``models/actor_critic.py``; these only make it cheaper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrainingMLP(torch.autograd.Function):
    """An MLP made by :func:`models.actor_critic.mlp` as one autograd node with its own backward, for update
    batches (CPU, with gradients), instead of one node per layer and activation. Outputs and gradients equal
    per-layer autograd's (``F.linear``, then tanh) to the bit, but for the first layer's weight gradient,
    which is the same sums in another order (tested). Why each choice is faster: docs/design.md
    ("The update MLP: one autograd node").

    - tanh is 2·sigmoid(2x) − 1, in place on the layer's output, with tanh's own backward: ATen's CPU tanh
      is slower than its sigmoid.
    - the first layer's weight gradient is ``(xᵀ·g)ᵀ`` instead of autograd's ``gᵀ·x``, which MKL runs
      slowly on a narrow observation ``x``.
    - one node and in-place activations instead of 5-6 nodes and their temporaries per MLP.

    - ReLU hidden layers (``relu=True``) run in place too; their backward masks by the saved output.

    ``forward(x [B, D], out_tanh, relu, w1 [H1, D], b1 [H1], w2, b2, ...)`` → ``[B, out]``; ``out_tanh``: tanh
    on the output too (the actor's mean); ``relu``: ReLU instead of tanh on the hidden layers.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, out_tanh: bool, relu: bool,
                *params: torch.Tensor) -> torch.Tensor:
        n = len(params) // 2
        outputs = []
        h = x
        for i in range(n):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
            if i < n - 1 and relu:
                h.relu_()
            elif i < n - 1 or out_tanh:
                h.mul_(2).sigmoid_().mul_(2).sub_(1)
            outputs.append(h)
        ctx.out_tanh, ctx.relu = out_tanh, relu
        ctx.save_for_backward(x, *outputs, *params)
        return h

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        n = (len(saved) - 1) // 3
        inputs, params = saved[:n + 1], saved[n + 1:]  # inputs[i]: layer i's input; inputs[i + 1]: its output
        grads: list[torch.Tensor | None] = [None] * (2 * n)
        for i in reversed(range(n)):
            if i < n - 1 and ctx.relu:
                grad = torch.ops.aten.threshold_backward(grad, inputs[i + 1], 0)
            elif i < n - 1 or ctx.out_tanh:
                grad = torch.ops.aten.tanh_backward(grad, inputs[i + 1])
            x = inputs[i]
            grads[2 * i] = x.t().mm(grad).t().contiguous() if i == 0 else grad.t().mm(x)
            grads[2 * i + 1] = grad.sum(0)
            if i > 0:
                grad = grad.mm(params[2 * i])
        grad_x = grad.mm(params[0]) if ctx.needs_input_grad[0] else None
        return (grad_x, None, None, *grads)


def run_mlp(layers: tuple[nn.Linear, ...], x: torch.Tensor, out_tanh: bool = False, relu: bool = False) -> torch.Tensor:
    """The function of an MLP made by :func:`models.actor_critic.mlp` (its Linear layers given), tanh on the
    output when ``out_tanh``, ReLU hidden layers when ``relu``. Without a module call per layer: on the
    few-row batches of collection the calls would cost more than the arithmetic. Update batches take
    :class:`TrainingMLP`."""
    if torch.is_grad_enabled() and layers[0].weight.requires_grad and x.device.type == "cpu":
        return TrainingMLP.apply(x, out_tanh, relu, *(t for layer in layers for t in (layer.weight, layer.bias)))
    # Per-step inference (no grad, a few rows) is dispatch-bound and keeps the one-op tanh.
    act = torch.relu if relu else torch.tanh
    x = F.linear(x, layers[0].weight, layers[0].bias)
    for layer in layers[1:]:
        x = F.linear(act(x), layer.weight, layer.bias)
    return torch.tanh(x) if out_tanh else x
