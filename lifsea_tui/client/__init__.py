"""Async clients of node API v1, for the console and scripts.

`NodeClient` talks to one node (httpx, keep-alive, per-node timeout, errors classified so the console
can say why a node is not answering); `Fleet` refreshes many nodes concurrently with bounded
concurrency and backoff for dead ones; `inventory` says which nodes there are. Imports only
`lifsea_tui.api` of the project.
"""
