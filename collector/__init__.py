"""collector: a Prometheus sidecar that turns what an app does into metrics."""

__all__ = ["__version__"]

__version__ = "0.1.0"
