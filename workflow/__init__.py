"""Workflows headless: the formats (UI and API) and the one graph runner."""
