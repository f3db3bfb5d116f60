"""kadapt's trainer: runs one adaptation strategy on DeepSpeed inside each worker process."""

__version__ = "0.1.0"
