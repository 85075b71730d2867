"""The implementations people use today, per spec, for the side-by-side rows of the report.

Each entry is a function of the spec's inputs and params in one backend, differentiated by that
backend's autodiff. A library that is not installed is skipped with a note, never an error.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["library_functions"]


def _torchvision_focal():
    import torch
    import torch.nn.functional as F

    def focal(x, y, alpha, gamma):
        # torchvision.ops.sigmoid_focal_loss, its published formula (reduction="none")
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * ((1 - p_t) ** gamma)
        return (alpha * y + (1 - alpha) * (1 - y)) * loss

    return "torchvision's formula (torch)", "torch", focal


def _optax_focal():
    import optax

    def focal(x, y, alpha, gamma):
        return optax.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma)

    return f"optax {optax.__version__} sigmoid_focal_loss", "jax", focal


def _torch_bce():
    import torch.nn.functional as F

    def bce(x, y, pos_weight):
        return F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction="none")

    return "F.binary_cross_entropy_with_logits", "torch", bce


def _torch_mse():
    import torch.nn.functional as F

    def mse(pred, target):
        return F.mse_loss(pred, target, reduction="none")

    return "F.mse_loss", "torch", mse


def _optax_mse():
    import optax

    def mse(pred, target):
        return optax.squared_error(pred, target)

    return f"optax {optax.__version__} squared_error", "jax", mse


#: spec name -> factories; each returns (label, backend, function) or raises ImportError
LIBRARIES: dict[str, list[Callable]] = {
    "sigmoid_focal_loss": [_torchvision_focal, _optax_focal],
    "bce_with_logits": [_torch_bce],
    "mse": [_torch_mse, _optax_mse],
}


def library_functions(spec_name: str) -> tuple[list[tuple[str, str, Callable]], list[str]]:
    """The installed library implementations of a spec, and a note for each one skipped."""
    found, skipped = [], []
    for factory in LIBRARIES.get(spec_name, []):
        try:
            found.append(factory())
        except ImportError as error:
            skipped.append(f"{factory.__name__.strip('_')}: {error.name or error} is not installed")
    return found, skipped
