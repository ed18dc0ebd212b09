"""A simulated qemu-ga speaking the real wire protocol, with faults on demand.

Serves `qgadash --demo`, fault tests and benchmarks. `python -m qgadash.sim --help` runs
a fleet from the command line.
"""

from qgadash.sim.agent import GuestAgent
from qgadash.sim.fleet import SimFleet, SimVm, write_hosts_toml
from qgadash.sim.profiles import Era, Fault, GuestProfile, demo_fleet, era_profile, make_profile

__all__ = [
    "Era",
    "Fault",
    "GuestAgent",
    "GuestProfile",
    "SimFleet",
    "SimVm",
    "demo_fleet",
    "era_profile",
    "make_profile",
    "write_hosts_toml",
]
