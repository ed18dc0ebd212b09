"""The built wheel, installed (not editable), finds what it ships beside its code.

The themes and the stylesheets are data files in the package (`qgadash/ui/themes/*.toml`,
`qgadash/ui/**/*.tcss`, pyproject's package-data): a glob that misses one passes every
test run from the source tree and fails only for the operator who installed the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What the installed copy reports about itself, as JSON, run with only that copy on the path.
PROBE = """
import json, pathlib
import qgadash
import qgadash.ui.app as app_module
from qgadash.ui.app import QgadashApp
from qgadash.ui.themes import load_themes
themes, errors = load_themes(pathlib.Path("/nonexistent"))
ui = pathlib.Path(app_module.__file__).parent
print(json.dumps({
    "package": qgadash.__file__,
    "themes": sorted(themes),
    "errors": errors,
    "missing_css": [css for css in QgadashApp.CSS_PATH if not (ui / css).is_file()],
    "typed": (pathlib.Path(qgadash.__file__).parent / "py.typed").is_file(),
}))
"""


def test_the_installed_wheel_finds_its_themes_and_stylesheets(tmp_path: Path) -> None:
    # Built from a copy of the sources, so no build/ or egg-info lands in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(
        REPO / "qgadash", source / "qgadash", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "-w", str(tmp_path / "dist")],
        check=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("qgadash-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(probe.stdout)
    assert Path(found["package"]).is_relative_to(site), found  # the installed copy, not ours
    assert found["themes"] == ["qgadash-dark", "qgadash-high-contrast", "qgadash-light"]
    assert found["errors"] == []
    assert found["missing_css"] == []
    assert found["typed"] is True
