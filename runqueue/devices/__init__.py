"""Devices: inventories, host-wide claims and the pure placement function."""
