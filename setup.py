from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="texium",
    version="0.1.0",
    description="Job-scheduler server: JSON API over MongoDB or embedded SQLite, APScheduler cron jobs",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # static/ (the vendored front-end files) is installed as texium/static.
    packages=[*find_packages(include=["texium", "texium.*"]), "texium.static"],
    package_dir={"texium.static": "static"},
    package_data={
        "texium": ["openapi.yaml"],
        "texium.static": ["*.md", "vendor/*.md", "vendor/*/*", "app/*", "app/pages/*", "docs/*"],
    },
    install_requires=[
        "tornado>=6.4,<7",
        "pymongo>=4.6,<5",
        "apscheduler>=3.10,<4",
        "python-dateutil>=2.8",
        "cryptography>=42",  # Fernet: authenticated encryption of server passwords at rest
        "python-dotenv>=1.0",  # .env parsing with quoting and export rules done right
        "psutil>=5.9",  # SystemMetricsJob: CPU, memory, disk and process figures portably
        "mongomock>=4.1",  # MONGO_URI=mongomock:// for demos and tests
        "pyyaml>=6",  # the OpenAPI description is kept as YAML
        "email-validator>=2.1",  # one e-mail address check for users and EmailNotificationJob
        "prometheus-client>=0.20",  # GET /metrics: the Prometheus text format, histograms, its own registry
        "jsonschema-rs>=0.60,<1",  # request bodies checked against openapi.yaml: ~0.6 us a body, pure-Python ~75 us
        "icalendar>=6",  # calendars: RFC 5545 iCalendar files parsed by a maintained library
        "recurring-ical-events>=3",  # ... and their RRULE/RDATE/EXDATE recurrences expanded into holidays
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-tornado>=0.8",
            "pytest-xdist>=3.5",  # two workers, one test file each: the suite waits on servers more than on CPU
            "requests>=2.31",
            "aiosmtpd>=1.4",
            "hypothesis>=6",
            "schemathesis>=4,<5",
            "openapi-spec-validator>=0.7",
            "playwright>=1.40",  # drives Debian's chromium (executable_path); no browser download
            "croniter>=2",  # the differential cron test compares Texium's engine with it
            "ruff>=0.6",  # lint and format, checked in CI before the tests
            "apprise>=1.6",  # the apprise channel kind is tested against a local receiver (json://)
        ],
        # The `apprise` channel kind: the long tail of notification services, by apprise URL.
        "apprise": ["apprise>=1.6"],
    },
    entry_points={
        "console_scripts": [
            "texium-server=texium.server.__main__:main",
            "texium-restore=texium.restore:main",
            "texium=texium.cli:main",  # jobs as code: texium export / texium import FILE
        ],
    },
)
