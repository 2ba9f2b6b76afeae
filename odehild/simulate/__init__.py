"""Simulate stage: finite-width, finite-dimension networks trained by SGD, GD or gradient flow."""

from .networks import (ALGORITHMS, Network, Simulation, batch_gd, online_sgd, population_gf,
                       random_start, simulate)

__all__ = ["ALGORITHMS", "Network", "Simulation", "batch_gd", "online_sgd", "population_gf",
           "random_start", "simulate"]
