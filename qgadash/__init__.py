"""qgadash: a terminal dashboard for fleets of VMs speaking to the QEMU guest agent."""

__version__ = "0.1.0"
