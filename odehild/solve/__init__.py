"""Solve stage: integration of compiled models and analysis of trajectories."""

from .integrate import log_time_grid, solve
from .trajectory import InitialCondition, Trajectory, a0_law, initial_condition

__all__ = ["InitialCondition", "Trajectory", "a0_law", "initial_condition", "log_time_grid", "solve"]
