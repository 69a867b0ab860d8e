"""The node agent, lifsea-agent: serves node API v1 for one node.

Owns the rules table and authentication, the audit log, and the backends (ostree sysroot, systemd over
D-Bus) with the node's paths injected. Imports only `lifsea_tui.api` of the project.
"""
