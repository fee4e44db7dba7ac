"""Settings resolve defaults < module < .env < environment < flags, and bad ones stop start-up."""

import subprocess
import sys

import pytest

from tests.server_process import REPO
from texium.config import ConfigError, load_settings


@pytest.fixture
def settings_module(tmp_path, monkeypatch):
    (tmp_path / "my_settings.py").write_text(
        "HTTP_PORT = 9001\nDB_NAME = 'from_module'\nTIMEZONE = 'Europe/Paris'\nLOWER = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_settings"


def test_defaults(tmp_path):
    settings = load_settings({}, environ={}, cwd=str(tmp_path))
    assert settings["HTTP_PORT"] == 8000 and settings["HTTP_ADDRESS"] == "127.0.0.1"
    assert settings["MONGO_URI"] == "" and settings["DB_NAME"] == "texium_db"
    assert settings["BACKUP_DIR"].endswith("texium-data/backups")


def test_precedence(tmp_path, settings_module):
    environ = {"TEXIUM_SETTINGS_MODULE": settings_module}
    assert load_settings({}, environ=environ, cwd=str(tmp_path))["HTTP_PORT"] == 9001
    (tmp_path / ".env").write_text("HTTP_PORT=9002\nDB_NAME=from_dotenv\nMONGO_URI=mongomock://\n")
    settings = load_settings({}, environ=environ, cwd=str(tmp_path))
    assert (
        settings["HTTP_PORT"] == 9002
        and settings["DB_NAME"] == "from_dotenv"
        and settings["MONGO_URI"] == "mongomock://"
    )
    assert settings["TIMEZONE"] == "Europe/Paris" and "LOWER" not in settings
    environ.update(
        HTTP_PORT="9003",
        TEXIUM_DATA_DIR=str(tmp_path / "d"),
        TEXIUM_SMTP_STARTTLS="true",
        TEXIUM_JOB_CLASS_PACKAGES="a.b, c",
    )
    settings = load_settings({}, environ=environ, cwd=str(tmp_path))
    assert settings["HTTP_PORT"] == 9003 and settings["DATA_DIR"] == str(tmp_path / "d")
    assert settings["SMTP_STARTTLS"] is True and settings["JOB_CLASS_PACKAGES"] == ["a.b", "c"]
    assert load_settings({"HTTP_PORT": 9004}, environ=environ, cwd=str(tmp_path))["HTTP_PORT"] == 9004
    assert load_settings({}, environ=environ, cwd=str(tmp_path), settings_module=settings_module)["HTTP_PORT"] == 9003


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"HTTP_PORT": "eighty"}, "HTTP_PORT"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT"),
        ({"TEXIUM_TIMEZONE": "Nowhere/City"}, "TIMEZONE"),
        ({"TEXIUM_SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
        ({"TEXIUM_SETTINGS_MODULE": "no_such_settings_module"}, "no_such_settings_module"),
        ({"TEXIUM_THREAD_POOL_SIZE": "0"}, "THREAD_POOL_SIZE"),
        ({"TEXIUM_LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"TEXIUM_MISFIRE_GRACE_TIME": "0"}, "MISFIRE_GRACE_TIME"),  # every firing would be late: nothing runs
        ({"TEXIUM_SCHEDULER_POLL_SECONDS": "soon"}, "SCHEDULER_POLL_SECONDS"),
        ({"TEXIUM_NODE_TIMEOUT_SECONDS": "0.5"}, "NODE_TIMEOUT_SECONDS"),
        ({"TEXIUM_HEARTBEAT_SECONDS": "10", "TEXIUM_NODE_TIMEOUT_SECONDS": "20"}, "NODE_TIMEOUT_SECONDS"),
        ({"TEXIUM_ALERT_DIGEST_SECONDS": "-1"}, "ALERT_DIGEST_SECONDS"),
        ({"TEXIUM_ALERT_DIGEST_AFTER": "0"}, "ALERT_DIGEST_AFTER"),  # the window's first message always goes out
    ],
)
def test_bad_settings_name_the_setting(tmp_path, environ, named):
    with pytest.raises(ConfigError) as error:
        load_settings({}, environ=environ, cwd=str(tmp_path))
    assert named in str(error.value)


def run_server(tmp_path, *args, env=None):
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}
    environment.update({"TEXIUM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "texium.server", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--port", "0"], {}, "HTTP_PORT"),
        ([], {"HTTP_PORT": "x"}, "HTTP_PORT"),
        (["--settings", "missing.module"], {}, "missing.module"),
        ([], {"TEXIUM_JOB_CLASS_PACKAGES": "no_such_job_package"}, "no_such_job_package"),
        ([], {"TEXIUM_SECRET_KEY": "short"}, "SECRET_KEY"),
        ([], {"TEXIUM_MISFIRE_GRACE_TIME": "0"}, "MISFIRE_GRACE_TIME"),
    ],
)
def test_server_refuses_bad_settings_with_one_line(tmp_path, args, env, expected):
    result = run_server(tmp_path, *args, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr


def test_unreachable_mongodb_stops_start_up_clearly(tmp_path):
    result = run_server(
        tmp_path,
        "--port",
        "18999",
        env={"MONGO_URI": "mongodb://texium:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert "cannot start" in result.stderr
