"""lifsea-tui: an ops console for fleets of ostree-based, container-optimized Linux nodes.

Parts: `api` (the wire contract), `agent` (the node agent), `client` (async clients for the console),
`tui` (the Textual console) and `lab` (a real lab fleet on one machine).
"""

__version__ = "0.1.0"
