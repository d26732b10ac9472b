"""Batch norm over the global batch of a distributed run, on any backend (gloo on CPU included).

Data-parallel training averages gradients, but plain batch norm normalises each
process's share of the batch with that share's own statistics, so W processes
x batch b is *not* 1 process x batch W*b. ``torch.nn.SyncBatchNorm`` fixes that
on GPUs only; :class:`GlobalBatchNorm` does the same with autograd-aware
all-reduces (``torch.distributed.nn``), which run on every backend. Statistics
are computed in two passes (mean, then the mean squared deviation) for the same
numerics as a single-process batch norm. :func:`convert_batchnorm` picks
``SyncBatchNorm`` on CUDA and :class:`GlobalBatchNorm` elsewhere.

State-dict keys are those of ``nn.BatchNorm3d``, so a checkpoint of a converted
network loads into the plain network.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GlobalBatchNorm", "convert_batchnorm", "local_statistics"]

_sync = {"enabled": True}


@contextlib.contextmanager
def local_statistics():
    """Within the block, :class:`GlobalBatchNorm` uses this process's batch only.

    For work that one process does alone (validation, plots on rank 0): a
    collective there would wait forever for the other processes.
    """
    previous = _sync["enabled"]
    _sync["enabled"] = False
    try:
        yield
    finally:
        _sync["enabled"] = previous


def _all_reduce_sum(x: Tensor) -> Tensor:
    # deferred: torch.distributed.nn needs a torch built with distributed support; only multi-process runs get here
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training-mode statistics cover every process's batch.

    Outside a distributed run, or in eval mode, it is ``nn.BatchNorm{1,2,3}d``.
    Running variance uses the unbiased global variance, as ``SyncBatchNorm``.

    Args: as ``nn.BatchNorm3d``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects Tensor[B, C, *S], got shape {tuple(input.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        distributed = (_sync["enabled"] and dist.is_available() and dist.is_initialized()
                       and dist.get_world_size() > 1)
        if not (self.training and distributed):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.double() if x.dtype == torch.float64 else x.float()  # statistics in fp32 at least
        count = _all_reduce_sum(torch.tensor([x.numel() // x.shape[1]], dtype=xf.dtype, device=x.device))
        mean = _all_reduce_sum(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = _all_reduce_sum(centred.square().sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return y.to(x.dtype)


def _to_global(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight = module.weight  # the same Parameter objects: the optimizer and EMA see no change
            out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_global(child))
    return out


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of ``module`` made global: ``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` otherwise.

    Returns the converted module (the root itself may be replaced if it is a batch norm).
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global(module)
