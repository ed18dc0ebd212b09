"""Shared fixtures: real qemu-ga agents, a real sshd, real QEMU guests (each fails under CI=true
when its peer is missing, and skips otherwise)."""

pytest_plugins = [
    "tests.integration.realagent",
    "tests.integration.sshd",
    "tests.integration.libvirtd",
    "tests.guests.fixtures",
]
