"""Runnable examples (``uvicorn examples.webapp:app``)."""
