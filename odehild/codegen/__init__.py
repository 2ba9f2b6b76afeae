"""Codegen stage: SymPy derivations to cached, Numba-compiled right-hand sides and Jacobians."""

from .numba_gen import (CompiledModel, cache_dir, compile_model, compile_source, digest,
                        scalar_functions_source)

__all__ = ["CompiledModel", "cache_dir", "compile_model", "compile_source", "digest",
           "scalar_functions_source"]
