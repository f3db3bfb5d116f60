"""kadapt's operator side: the AdaptationJob API, rendering, the kopf operator and the CLI."""

__version__ = "0.1.0"
