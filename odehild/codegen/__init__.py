"""Codegen stage: SymPy derivations to cached, Numba-compiled right-hand sides and Jacobians."""

from .numba_gen import CompiledModel, cache_dir, compile_model

__all__ = ["CompiledModel", "cache_dir", "compile_model"]
