"""lifsea-fleetd: the fleet controller (rollouts, reboot slots, FleetLock), its state in etcd."""
