"""Adapting a trained network's normalisation to one microscope or one sample, without labels (AdaBN).

Batch-norm layers carry the training images' feature statistics. On another microscope the same cell gives other
statistics, and every later layer sees shifted inputs. Re-estimating those statistics on the new microscope's own
images (Li et al. 2016, "Revisiting batch normalization for practical domain adaptation"; Tsutsui 2023 names batch
normalisation as a main cause of the WBC domain drop) needs no labels: a sample's own white cells are enough.
"""

from __future__ import annotations

import torch
from torch import nn


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.inference_mode()
def adapt_norm(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 64) -> None:
    """Replace every batch-norm layer's running statistics by those of ``inputs`` ``[n, 3, h, w]`` (normalised
    model inputs), averaged over all of them; the model is left in eval mode."""
    norms = batch_norms(model)
    saved = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over the batches, not an exponential one
    model.eval()
    for module in norms:
        module.train()
    for start in range(0, len(inputs), batch_size):
        model(inputs[start : start + batch_size])
    model.eval()
    for module, momentum in zip(norms, saved):
        module.momentum = momentum
