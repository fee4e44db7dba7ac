"""`pip install .` (the README's run command) must ship everything the server serves."""

import subprocess
import sys
import zipfile

from tests.server_process import REPO


def test_wheel_contains_package_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("texium-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "texium/openapi.yaml",
        "texium/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "texium/static/vendor/swagger-ui/swagger-ui.css",
        "texium/static/docs/docs.js",
        "texium/static/app/favicon.svg",
        "texium/jobs/echo.py",
        "texium/server/__main__.py",
    ):
        assert required in names, required
    assert not any(name.startswith("tests/") for name in names)
