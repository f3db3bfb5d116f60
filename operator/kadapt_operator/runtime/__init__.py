"""The running operator: kopf handlers, API writes, status, progress polling and the CLI.

Everything here imports kopf; the pure layers (api, validation, render, settings) do not.
"""
