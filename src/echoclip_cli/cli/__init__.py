"""Command-line interface: thin Typer commands over the library (see ``app.py``)."""

from .app import app, main

__all__ = ["app", "main"]
