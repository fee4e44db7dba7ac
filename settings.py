"""Example Texium settings module.

Use it with `TEXIUM_SETTINGS_MODULE=settings python -m texium.server` (or `--settings settings`).
Only the names you set here override texium/default_settings.py; a `.env` file, environment
variables and flags still win over this module.
"""

# Serve on all interfaces, port 8000.
# HTTP_ADDRESS = "0.0.0.0"
# HTTP_PORT = 8000

# Production: MongoDB. Leave unset for the embedded SQLite store in DATA_DIR.
# MONGO_URI = "mongodb://texium:change-me@db.internal:27017/?authSource=admin"
# DB_NAME = "texium_db"

# Where the embedded store, backups, reports and scripts live.
DATA_DIR = "./texium-data"

# Scheduler
TIMEZONE = "UTC"
THREAD_POOL_SIZE = 8
# MAX_RUNS_PER_USER = 6  # workers one user's runs may hold on a node (default: three quarters of the pool)

# E-mail for EmailNotificationJob
# SMTP_HOST = "smtp.example.com"
# SMTP_PORT = 587
# SMTP_STARTTLS = True
# SMTP_USERNAME = "texium"
# SMTP_PASSWORD = "..."          # better: TEXIUM_SMTP_PASSWORD in the environment
# SMTP_FROM = "texium@example.com"
# EMAIL_ALLOWED_DOMAINS = ["example.com"]  # users' EmailNotificationJob jobs send only there
# EMAIL_MAX_PER_HOUR = 20                  # ... and at most this many messages an hour each

# Packages with your own job classes (JobBase subclasses), e.g. "mycompany.texium_jobs"
# JOB_CLASS_PACKAGES = ["mycompany.texium_jobs"]

# Alerting: how often a node looks for passed deadlines (seconds)
# ALERT_CHECK_SECONDS = 1.0
# ... and how often a job with an adherence_target has its schedule adherence computed (seconds)
# ADHERENCE_CHECK_SECONDS = 60.0
