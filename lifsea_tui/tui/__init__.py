"""The Textual console, lifsea-tui: fleet and node screens, actions with confirmation and reason, themes.

Imports `lifsea_tui.api` and `lifsea_tui.client` of the project; all network I/O runs in workers.
"""
