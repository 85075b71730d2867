"""Training-speed benchmark: lossgen's wrappers against the libraries people use.

Forward+backward of the mean loss, and the Hessian diagonal (lossgen's ``hess`` against double
backward / nested ``jax.grad``), float32, measured side by side in one process: every
repetition times each implementation once, in turn, and the table shows medians. The loss over
a class axis (softmax_cross_entropy_index, C = 1000 classes, n / C rows) times the
Hessian-vector product instead of the diagonal.

    python benchmarks/bench_train.py                 # CPU, 2^16, 2^20 and 2^23 elements
    python benchmarks/bench_train.py --sizes 16,20 --quick
    python benchmarks/bench_train.py --device cuda   # torch on CUDA, with torch.compile rows
                                                     # and the memory floor
    python benchmarks/bench_train.py --compile       # torch.compile rows on CPU too

This is a benchmark, not a test: nothing fails, it prints a table (``make bench``).

CPU threads: one per framework by default (``BENCH_THREADS=N`` to change). On a small shared
machine torch's intra-op thread pool slows every eager op down by an order of magnitude when
the cores are busy, which would measure the scheduler, not the code.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if THREADS == 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import lossgen
from lossgen._generate import PROJECT

ALPHA, GAMMA = 0.25, 2.0


# ---------------------------------------------------------------------------------- torch rows
def torchvision_focal(x, y, alpha=ALPHA, gamma=GAMMA):
    """torchvision.ops.sigmoid_focal_loss (reduction="none"), written out."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * loss


#: classes of the class-axis loss: n elements are n // CLASSES rows
CLASSES = 1000


def torch_cases(name, n, device, rng):
    """(lossgen mean loss, library mean loss, lossgen hess, library elementwise loss, inputs)."""
    if name == "softmax_cross_entropy_index":
        rows = max(n // CLASSES, 1)
        x = torch.tensor(rng.standard_normal((rows, CLASSES)) * 3, dtype=torch.float32, device=device)
        k = torch.tensor(rng.integers(0, CLASSES, rows), device=device)
        module = lossgen.load(name, "torch")
        return dict(
            ours=lambda a: module.softmax_cross_entropy_index(a, k),
            lib=lambda a: F.cross_entropy(a, k),
            # the Hessian applied to a vector (the (C, C) blocks are not the fair comparison)
            hess=lambda a: module.hvp(a, k, a),
            lib_elementwise=lambda a: F.cross_entropy(a, k, reduction="none"),
            x=x,
            label="F.cross_entropy",
            hvp=True,
        )
    x = torch.tensor(rng.standard_normal(n) * 3, dtype=torch.float32, device=device)
    if name == "log_cosh":
        target = torch.tensor(rng.standard_normal(n), dtype=torch.float32, device=device)
    else:
        target = torch.tensor(rng.random(n) < 0.5, dtype=torch.float32, device=device)
    module = lossgen.load(name, "torch")
    wrapper = getattr(module, name)
    params = {"sigmoid_focal_loss": dict(alpha=ALPHA, gamma=GAMMA)}.get(name, {})
    library = {
        "sigmoid_focal_loss": torchvision_focal,
        "bce_with_logits": lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"),
        "log_cosh": lambda a, b: torch.log(torch.cosh(a - b)),
    }[name]
    label = {
        "sigmoid_focal_loss": "torchvision formula",
        "bce_with_logits": "F.binary_cross_entropy_with_logits",
        "log_cosh": "torch.log(torch.cosh(.))",
    }[name]
    return dict(
        ours=lambda a: wrapper(a, target, **params),
        lib=lambda a: library(a, target).mean(),
        hess=lambda a: module.hess(a, target, **params),
        lib_elementwise=lambda a: library(a, target),
        x=x,
        label=label,
    )


def torch_fwd_bwd(loss_fn, x):
    leaf = x.detach().requires_grad_()

    def run():
        loss = loss_fn(leaf)
        (g,) = torch.autograd.grad(loss, leaf)
        return g

    return run


def torch_double_backward(elementwise, x, hvp=False):
    """The Hessian diagonal of an elementwise loss by double backward (with ``hvp``, the
    Hessian applied to x, for a loss over a class axis)."""
    leaf = x.detach().requires_grad_()

    def run():
        (g,) = torch.autograd.grad(elementwise(leaf).sum(), leaf, create_graph=True)
        (h,) = torch.autograd.grad((g * x).sum() if hvp else g.sum(), leaf)
        return h

    return run


# ------------------------------------------------------------------------------------ jax rows
def jax_cases(name, n, rng):
    import optax

    if name == "softmax_cross_entropy_index":
        rows = max(n // CLASSES, 1)
        x = jnp.asarray(rng.standard_normal((rows, CLASSES)) * 3, dtype=jnp.float32)
        k = jnp.asarray(rng.integers(0, CLASSES, rows))
        module = lossgen.load(name, "jax")

        def lib_sum(a):
            return optax.softmax_cross_entropy_with_integer_labels(a, k).sum()

        return dict(
            ours=jax.jit(jax.value_and_grad(lambda a: module.softmax_cross_entropy_index(a, k))),
            lib=jax.jit(jax.value_and_grad(lambda a: lib_sum(a) / rows)),
            hess=jax.jit(lambda a: module.hvp(a, k, a)),
            lib_hess=jax.jit(lambda a: jax.jvp(jax.grad(lib_sum), (a,), (a,))[1]),
            x=x,
            label="optax.softmax_cross_entropy_with_integer_labels",
            hvp=True,
        )
    x = jnp.asarray(rng.standard_normal(n) * 3, dtype=jnp.float32)
    if name == "log_cosh":
        target = jnp.asarray(rng.standard_normal(n), dtype=jnp.float32)
    else:
        target = jnp.asarray(rng.random(n) < 0.5, dtype=jnp.float32)
    module = lossgen.load(name, "jax")
    wrapper = getattr(module, name)
    params = {"sigmoid_focal_loss": dict(alpha=ALPHA, gamma=GAMMA)}.get(name, {})
    library, label = {
        "sigmoid_focal_loss": (
            lambda a, b: optax.sigmoid_focal_loss(a, b, alpha=ALPHA, gamma=GAMMA),
            "optax.sigmoid_focal_loss",
        ),
        "bce_with_logits": (optax.sigmoid_binary_cross_entropy, "optax.sigmoid_binary_cross_entropy"),
        "log_cosh": (optax.log_cosh, "optax.log_cosh"),
    }[name]

    def lib_sum(a):
        return library(a, target).sum()

    ours = jax.jit(jax.value_and_grad(lambda a: wrapper(a, target, **params)))
    lib = jax.jit(jax.value_and_grad(lambda a: library(a, target).mean()))
    hess = jax.jit(lambda a: module.hess(a, target, **params))
    lib_hess = jax.jit(jax.grad(lambda a: jax.grad(lib_sum)(a).sum()))
    return dict(ours=ours, lib=lib, hess=hess, lib_hess=lib_hess, x=x, label=label)


# -------------------------------------------------------------------------------------- timing
def interleaved(functions, reps, sync):
    """Median seconds per call of each function, timed in turn, ``reps`` times."""
    for f in functions.values():  # warm-up (and jit compilation)
        sync(f())
        sync(f())
    times = {k: [] for k in functions}
    for _ in range(reps):
        for key, f in functions.items():
            start = time.perf_counter()
            sync(f())
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def reps_for(n, quick):
    base = 40 if n <= 2**16 else 15 if n <= 2**20 else 5
    return max(3, base // 3) if quick else base


def torch_sync(device):
    if device == "cuda":
        return lambda _: torch.cuda.synchronize()
    return lambda _: None


def jax_sync(result):
    jax.block_until_ready(result)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="16,20,23", help="log2 of the element counts")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add torch.compile rows on CPU too (always on with --device cuda; on CPU inductor "
        "compiles C++ for tens of seconds per function and size)",
    )
    parser.add_argument("--skip-jax", action="store_true")
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args(argv)
    sizes = [2 ** int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}"
          f" ({jax.default_backend()}), device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    losses = [n for n in ("sigmoid_focal_loss", "bce_with_logits", "log_cosh", "softmax_cross_entropy_index")
              if (PROJECT / "specs" / f"{n}.yaml").exists()]
    for missing in ("log_cosh", "softmax_cross_entropy_index"):
        if not (PROJECT / "specs" / f"{missing}.yaml").exists():
            print(f"skipped: {missing} (no specs/{missing}.yaml yet)")

    rows = []
    sync = torch_sync(args.device)
    for n in sizes:
        reps = reps_for(n, args.quick)
        if args.device == "cuda" and not args.skip_torch:
            x = torch.randn(n, device="cuda")
            t = interleaved({"copy": lambda: x.clone()}, reps, sync)["copy"]
            rows.append(("memory floor", "torch", n, 1.5 * t, t, "1.5 x copy | copy"))
        for name in losses:
            if not args.skip_torch:
                c = torch_cases(name, n, args.device, rng)
                fns = {
                    "ours": torch_fwd_bwd(c["ours"], c["x"]),
                    "lib": torch_fwd_bwd(c["lib"], c["x"]),
                    "hess": lambda c=c: c["hess"](c["x"]),
                    "lib_hess": torch_double_backward(c["lib_elementwise"], c["x"], c.get("hvp", False)),
                }
                if args.device == "cuda" or args.compile:
                    fns["ours_compiled"] = torch_fwd_bwd(torch.compile(c["ours"]), c["x"])
                    fns["lib_compiled"] = torch_fwd_bwd(torch.compile(c["lib"]), c["x"])
                t = interleaved(fns, reps, sync)
                rows.append((name, "torch", n, t["ours"], t["lib"], f"fwd+bwd vs {c['label']}"))
                if "ours_compiled" in t:
                    rows.append((name, "torch.compile", n, t["ours_compiled"], t["lib_compiled"],
                                 f"fwd+bwd vs {c['label']}"))
                rows.append((name, "torch", n, t["hess"], t["lib_hess"],
                             "hvp vs double backward" if c.get("hvp") else "hess vs double backward"))
            if not args.skip_jax:
                c = jax_cases(name, n, rng)
                fns = {k: (lambda f=c[k], x=c["x"]: f(x)) for k in ("ours", "lib", "hess", "lib_hess")}
                t = interleaved(fns, reps, jax_sync)
                rows.append((name, "jax jit", n, t["ours"], t["lib"], f"fwd+bwd vs {c['label']}"))
                rows.append((name, "jax jit", n, t["hess"], t["lib_hess"],
                             "hvp vs jvp of jax.grad" if c.get("hvp") else "hess vs nested jax.grad"))
            print(f"  done: {name} at 2^{int(np.log2(n))}", flush=True)

    print()
    print_table(rows)


def print_table(rows):
    head = ("loss", "framework", "n", "lossgen µs", "library µs", "ratio", "what")
    lines = [head]
    for name, framework, n, ours, lib, what in rows:
        lines.append((name, framework, f"2^{int(np.log2(n))}", f"{ours * 1e6:.0f}",
                      f"{lib * 1e6:.0f}", f"{ours / lib:.2f}", what))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines[1:]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |")


if __name__ == "__main__":
    main()
