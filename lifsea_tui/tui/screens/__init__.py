"""The console's screens: fleet, node, and the small modals they open."""
