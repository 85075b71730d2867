"""lossgen: stable gradients and Hessians of machine-learning losses, derived from YAML specs.

A loss is declared once as a textbook SymPy expression in ``specs/<name>.yaml``; lossgen
derives its gradient and Hessian, rewrites the terms that break in floating point into stable
forms, and emits NumPy, JAX and PyTorch modules under ``generated/`` (importable as
``lossgen.generated.<backend>.<name>``), each checked against an mpmath oracle.
"""

from ._build import UnstableWarning, build
from ._generate import generate, load, load_specs
from ._ir import Derivation, Finding, Rewrite
from ._pipeline import run
from ._spec import load_spec, parse_spec_text
from ._types import Diagnostic, Spec, SpecError

__all__ = [
    "Derivation",
    "Diagnostic",
    "Finding",
    "Rewrite",
    "Spec",
    "SpecError",
    "UnstableWarning",
    "build",
    "generate",
    "load",
    "load_spec",
    "load_specs",
    "parse_spec_text",
    "run",
]

__version__ = "0.1.0"
