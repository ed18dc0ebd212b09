"""hosts.toml errors name the file, the table, the key, what was found and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qgadash.fleet.config import ConfigError, load_config
from qgadash.fleet.model import SessionMode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_full_example_parses() -> None:
    config = load_config(Path(__file__).parents[3] / "hosts.example.toml")
    names = [h.name for h in config.hypervisors]
    assert names == ["lab", "hv1", "hv2"]
    hv1 = config.hypervisor("hv1")
    assert hv1 is not None and hv1.ssh == "ops@hv1.example.net:22"
    assert hv1.session is SessionMode.PER_POLL
    assert config.vms[0].name == "build-7"
    assert config.settings.thaw_after == 60.0


@pytest.mark.parametrize(
    ("text", "table", "key", "expected"),
    [
        (
            '[settings]\ntimeout = "soon"\n[[hypervisor]]\nname="a"\nagents=["/x"]\n',
            "settings",
            "timeout",
            "a number",
        ),
        (
            "[[hypervisor]]\nname='a'\nagents=['/x']\n[[hypervisor]]\nname='b'\nvia='telnet'\nagents=['/y']\n",
            "hypervisor[1]",
            "via",
            '"socket"',
        ),
        ("[[hypervisor]]\nname='a'\n", "hypervisor[0]", "agents", "socket globs"),
        ("[[hypervisor]]\nname='a b'\nagents=['/x']\n", "hypervisor[0]", "name", "letters"),
        (
            "[[hypervisor]]\nname='a'\nagents=['/x']\nsesion='held'\n",
            "hypervisor[0]",
            "sesion",
            "one of the keys",
        ),
        (
            "[[vm]]\nname='v'\nhypervisor='nope'\nagent='/x'\n",
            "vm[0]",
            "hypervisor",
            "the name of a [[hypervisor]]",
        ),
        (
            "[[hypervisor]]\nname='a'\nagents=['/x']\nsession='sometimes'\n",
            "hypervisor[0]",
            "session",
            '"held" or "per-poll"',
        ),
        (
            "[settings]\nread_only = 1\n[[vm]]\nname='v'\nagent='/x'\n",
            "settings",
            "read_only",
            "true or false",
        ),
    ],
)
def test_errors_name_file_table_key_and_expectation(
    tmp_path: Path, text: str, table: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"[{table}]" in message
    assert key in message
    assert expected in message
    assert "found" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[[hypervisor]\nname=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_cli_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "[[hypervisor]]\nname='a'\nagents=['/x']\nvia='telnet'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}: [hypervisor[0]] via: found 'telnet'" in proc.stderr


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(tmp_path / "none.toml"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "none.toml" in proc.stderr and "Traceback" not in proc.stderr


def test_status_does_not_import_textual(tmp_path: Path) -> None:
    path = write(tmp_path, f"[[vm]]\nname='v'\nagent='{tmp_path}/none.sock'\n")
    code = (
        f"import sys; from qgadash.cli import main; rc = main(['--hosts', {str(path)!r}, "
        "'status']); assert 'textual' not in sys.modules, 'textual imported'; print('rc', rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "rc 1" in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("text", "table", "key"),
    [
        ('[[vm]]\nname = "a"\nagent = "tcp:host:notaport"\n', "vm[0]", "agent"),
        ('[[vm]]\nname = "a"\nagent = "tcp:onlyhost"\n', "vm[0]", "agent"),
        ('[[vm]]\nname = "a"\nagent = "tcp:host:70000"\n', "vm[0]", "agent"),
        (
            '[[hypervisor]]\nname = "h"\nssh = "user@host:70000"\nagents = ["/x"]\n',
            "hypervisor[0]",
            "ssh",
        ),
        ('[[hypervisor]]\nname = "h"\nssh = "@host"\nagents = ["/x"]\n', "hypervisor[0]", "ssh"),
        (
            '[[hypervisor]]\nname = "h"\nssh = "h"\njump = "j:0"\nagents = ["/x"]\n',
            "hypervisor[0]",
            "jump",
        ),
    ],
)
def test_a_bad_endpoint_is_a_config_error_naming_table_and_key(
    tmp_path: Path, text: str, table: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert (caught.value.table, caught.value.key) == (table, key)


def test_a_bad_port_from_the_cli_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, '[[vm]]\nname = "a"\nagent = "tcp:host:notaport"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[vm[0]] agent" in proc.stderr


def test_duplicate_vm_names_are_an_error_naming_both(tmp_path: Path) -> None:
    text = '[[vm]]\nname = "a"\nagent = "/x"\n[[vm]]\nname = "b"\nagent = "/y"\n'
    text += '[[vm]]\nname = "a"\nagent = "/z"\n'
    with pytest.raises(ConfigError, match=r"vm\[0\] has it") as caught:
        load_config(write(tmp_path, text))
    assert (caught.value.table, caught.value.key) == ("vm[2]", "name")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[hypervisor]]\nname = "hv"\nagents = ["/x/*.sock"]\nuri = "qemu:///session"\n',
            'no uri unless via = "libvirt"',
        ),
        (
            '[[hypervisor]]\nname = "hv"\nvia = "libvirt"\nuri = "qemu:///system; reboot"\n',
            "a libvirt URI",
        ),
        ('[[hypervisor]]\nname = "hv"\nvia = "libvirt"\nuri = 5\n', "string"),
        (
            '[[hypervisor]]\nname = "hv"\nagents = ["/x/*.qga"]\nproxmox_configs = "etc/pve"\n',
            "an absolute directory",
        ),
    ],
)
def test_libvirt_uri_and_proxmox_errors_name_file_table_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "[hypervisor[0]]" in message and expected in message
    assert ("uri" in message) or ("proxmox_configs" in message)


def test_libvirt_uri_per_hypervisor(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[hypervisor]]\nname = "a"\nvia = "libvirt"\n'
        '[[hypervisor]]\nname = "b"\nvia = "libvirt"\nuri = "qemu:///session"\n'
        '[[hypervisor]]\nname = "c"\nvia = "libvirt"\nssh = "root@hv3"\n'
        'uri = "qemu+ssh://admin@hv4/system?keyfile=/root/.ssh/id_ed25519"\n',
    )
    a, b, c = load_config(path).hypervisors
    assert (a.uri, b.uri) == (None, "qemu:///session")
    assert c.uri == "qemu+ssh://admin@hv4/system?keyfile=/root/.ssh/id_ed25519"
