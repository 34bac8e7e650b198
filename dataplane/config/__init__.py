"""Configuration layer: our DataplaneConfiguration plus Kubernetes objects in their API shape.

    from dataplane.config import load, ConfigError
    cfg = load("examples/replay.yaml")      # raises ConfigError listing every problem
    cfg.dataplane.ports[0].mac
"""
from .dataplane import DataplaneConfig, Port, Route
from .loader import Config, ConfigError, Problem, load, loads

__all__ = ["Config", "ConfigError", "DataplaneConfig", "Port", "Problem", "Route", "load", "loads"]
