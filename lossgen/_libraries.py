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


def _torch_weighted_bce():
    import torch.nn.functional as F

    def bce(x, y, w):
        return F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none")

    return "F.binary_cross_entropy_with_logits(weight=)", "torch", bce


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


def _per_value(param, compute):
    """``compute(float)`` for each distinct value of a per-point parameter ``param`` (a torch
    tensor, as the report passes its columns), selected back per point: for library functions
    whose parameter must be a Python number (``delta``, ``beta``)."""
    import torch

    if not torch.is_tensor(param):
        return compute(float(param))
    if param.numel() == 0:  # no points to grade (none exact in a narrow dtype)
        return compute(1.0)
    out = None
    for v in torch.unique(param).tolist():
        part = compute(v)
        out = part if out is None else torch.where(param == v, part, out)
    return out


def _torch_l1():
    import torch.nn.functional as F

    def mae(pred, target):
        return F.l1_loss(pred, target, reduction="none")

    return "F.l1_loss", "torch", mae


def _torch_huber():
    import torch.nn.functional as F

    def huber(pred, target, delta):
        return _per_value(delta, lambda d: F.huber_loss(pred, target, reduction="none", delta=d))

    return "F.huber_loss", "torch", huber


def _optax_huber():
    import optax

    def huber(pred, target, delta):
        return optax.huber_loss(pred, target, delta=delta)

    return f"optax {optax.__version__} huber_loss", "jax", huber


def _torch_smooth_l1():
    import torch.nn.functional as F

    def smooth_l1(pred, target, beta):
        return _per_value(beta, lambda b: F.smooth_l1_loss(pred, target, reduction="none", beta=b))

    return "F.smooth_l1_loss", "torch", smooth_l1


def _optax_log_cosh():
    import optax

    def log_cosh(pred, target):
        return optax.log_cosh(pred, target)

    return f"optax {optax.__version__} log_cosh", "jax", log_cosh


def _torch_poisson():
    import torch.nn.functional as F

    def poisson(log_rate, target):
        return F.poisson_nll_loss(log_rate, target, log_input=True, full=False, reduction="none")

    return "F.poisson_nll_loss(log_input=True)", "torch", poisson


def _torch_poisson_rate():
    import torch.nn.functional as F

    def poisson(rate, target):
        # torch's default eps=1e-8 inside log(input + eps), as users call it
        return F.poisson_nll_loss(rate, target, log_input=False, full=False, reduction="none")

    return "F.poisson_nll_loss(log_input=False), default eps=1e-8", "torch", poisson


def _torch_gaussian_nll():
    import torch.nn.functional as F

    def gaussian(pred, target, var):
        # torch's default eps=1e-6: var is clamped to it (the gradient passes through the clamp)
        return F.gaussian_nll_loss(pred, target, var, full=False, reduction="none")

    return "F.gaussian_nll_loss, default eps=1e-6", "torch", gaussian


def _torch_bce_probs():
    import torch.nn.functional as F

    def bce(p, y):
        return F.binary_cross_entropy(p, y, reduction="none")

    return "F.binary_cross_entropy (log clamped at -100)", "torch", bce


def _optax_hinge():
    import optax

    def hinge(x, y):
        return optax.hinge_loss(x, y)

    return f"optax {optax.__version__} hinge_loss", "jax", hinge


def _torch_silu():
    import torch.nn.functional as F

    def silu(x):
        return F.silu(x)

    return "F.silu", "torch", silu


def _jax_silu():
    import jax

    def silu(x):
        return jax.nn.silu(x)

    return "jax.nn.silu", "jax", silu


def _torch_gelu():
    import torch.nn.functional as F

    def gelu(x, approximate="none"):
        return F.gelu(x, approximate=approximate)

    return "F.gelu", "torch", gelu


def _jax_gelu():
    import jax

    def gelu(x, approximate="none"):
        return jax.nn.gelu(x, approximate=approximate == "tanh")

    return "jax.nn.gelu", "jax", gelu


def _torch_mish():
    import torch.nn.functional as F

    def mish(x):
        return F.mish(x)

    return "F.mish", "torch", mish


def _torch_softplus():
    import torch.nn.functional as F

    def softplus(x, beta):
        # torch's default threshold=20: x itself where beta*x > 20
        return _per_value(beta, lambda b: F.softplus(x, beta=b))

    return "F.softplus(beta)", "torch", softplus


def _jax_softplus():
    import jax

    def softplus(x, beta):
        # jax.nn.softplus has no beta: the usual softplus(beta*x)/beta
        return jax.nn.softplus(beta * x) / beta

    return "jax.nn.softplus(beta*x)/beta", "jax", softplus


#: spec name -> factories; each returns (label, backend, function) or raises ImportError
LIBRARIES: dict[str, list[Callable]] = {
    "sigmoid_focal_loss": [_torchvision_focal, _optax_focal],
    "bce_with_logits": [_torch_bce],
    "ghm_c": [_torch_weighted_bce],
    "bce_probs": [_torch_bce_probs],
    "mse": [_torch_mse, _optax_mse],
    "mae": [_torch_l1],
    "huber": [_torch_huber, _optax_huber],
    "smooth_l1": [_torch_smooth_l1],
    "log_cosh": [_optax_log_cosh],
    "poisson_nll": [_torch_poisson],
    "poisson_nll_rate": [_torch_poisson_rate],
    "gaussian_nll": [_torch_gaussian_nll],
    "hinge": [_optax_hinge],
    "silu": [_torch_silu, _jax_silu],
    "gelu": [_torch_gelu, _jax_gelu],
    "mish": [_torch_mish],
    "softplus": [_torch_softplus, _jax_softplus],
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
