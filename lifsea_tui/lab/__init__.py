"""lifsea-lab: a real lab fleet on one machine.

The OS image (debootstrap, committed into ostree), the update server that serves it, certificates,
and nodes that are systemd-nspawn machines booted from ostree deployments, each with its own agent.
May import `api`, `agent` (to start it) and `client`.
"""
