"""Widgets of the console that own their data: each loads what it shows, through its own worker."""
