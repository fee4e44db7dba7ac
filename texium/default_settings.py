"""Every Texium setting with its default.

Override in a settings module (TEXIUM_SETTINGS_MODULE or --settings; see settings.py at the
repository root), then a `.env` file in the working directory, then environment variables,
then command-line flags: later wins. Each setting NAME can be set from the environment as
TEXIUM_NAME; MONGO_URI, DB_NAME, HTTP_PORT and HTTP_ADDRESS also work without the prefix.
"""

# HTTP
HTTP_PORT = 8000
HTTP_ADDRESS = "127.0.0.1"
MAX_BODY_BYTES = 1024 * 1024  # larger request bodies answer 413
DATASTORE_THREADS = 8  # threads that run datastore calls for the HTTP handlers
LOG_LEVEL = "INFO"
HEADER_TIMEOUT_SECONDS = 20.0  # a client that has not sent its request headers by then is dropped
BODY_TIMEOUT_SECONDS = 60.0  # ... or its request body
MAX_CONNECTIONS = 1000  # open connections at most (lowered to what the open-file limit allows)
MAX_CONNECTIONS_PER_ADDRESS = 100  # from one client address (at most half of MAX_CONNECTIONS; proxies exempt)
TLS_CERT_FILE = ""  # serve https with this certificate (PEM, chain included) ...
TLS_KEY_FILE = ""  # ... and its private key; both empty = plain http (e.g. behind a TLS proxy)
HSTS_SECONDS = 31536000  # Strict-Transport-Security max-age on https answers; 0 = not sent

# Security (README "Security")
AUTH_MODE = "auto"  # auto: API keys required unless listening on loopback only; on; off
ALLOWED_HOSTS = []  # Host names served besides localhost, 127.0.0.1, [::1] and the listening address
TRUSTED_PROXIES = []  # CIDRs of reverse proxies whose X-Forwarded-For / X-Real-Ip are believed
CORS_ORIGINS = []  # origins (https://ops.example.com) allowed to call the API from a browser
AUTH_FAILURES_PER_MINUTE = 10  # failed authentications per client address before 429
SESSION_LIFETIME_SECONDS = 12 * 3600.0  # a dashboard sign-in lasts this long (or until sign-out / key revoked)
INSECURE = False  # set by --insecure only: allow AUTH_MODE=off on an address that is not loopback
# GET /metrics (Prometheus) follows the API's rules: an admin key whenever keys are required.
# True serves it without a key, but only while the server listens on loopback (a Prometheus on
# the same host); on any other address it stays admin-only, whatever this says.
METRICS_PUBLIC = False

# Storage: embedded SQLite in DATA_DIR unless MONGO_URI is set ("mongomock://" = in memory)
DATA_DIR = "./texium-data"
MONGO_URI = ""
DB_NAME = "texium_db"
SECRET_KEY = ""  # Fernet key for server passwords; empty = generated once into DATA_DIR/secret.key

# Scheduler
TIMEZONE = "UTC"  # default timezone of a job's cron fields
THREAD_POOL_SIZE = 8  # jobs running at once
BUSY_WARNING_SECONDS = 60.0  # every worker busy while a due run waits this long: a health warning
BUSY_UNHEALTHY_SECONDS = 300.0  # ... and this long: health answers 503
MAX_RUNS_PER_USER = 0  # workers of a node one user's runs may hold at once; 0 = three quarters of the pool
JOB_MAX_INSTANCES = 1  # runs of one job at once (firings and run-now); extra firings are skipped, run-now 409
MISFIRE_GRACE_TIME = 3600  # seconds a late firing may still run (the latest due one; earlier ones: missed)
SHUTDOWN_GRACE_SECONDS = 30  # how long shutdown waits for running executions
SCHEDULER_POLL_SECONDS = 1.0  # longest sleep between passes: how soon other nodes' changes are seen
JOBSTORE_RETRY_SECONDS = 1.0  # retry after the scheduler could not read its store
HEARTBEAT_SECONDS = 1.0  # how often this node renews its heartbeat in scheduler_nodes
NODE_TIMEOUT_SECONDS = 30.0  # a node silent this long is dead: its runs become abandoned
JOB_CLASS_PACKAGES = []  # extra packages whose JobBase subclasses can be scheduled
DEFAULT_JOB_TIMEOUT = 0  # seconds a run may take when its job sets no timeout_seconds; 0 = no limit
# After a run is told to stop (timeout or cancel), how long its job may take to return before the
# run is recorded ended anyway and its thread left to finish in the background.
STOP_GRACE_SECONDS = 5.0

# Alerts (a job's `notify`): e-mails go through the SMTP settings below, webhooks follow OUTBOUND_*.
PUBLIC_URL = ""  # the dashboard's address in alert links; empty = http://HTTP_ADDRESS:HTTP_PORT
ALERT_WEBHOOK_SECRET = ""  # sign alert webhooks (X-Texium-Signature: sha256=HMAC of the body); empty = unsigned
# Channels (/api/scheduler/channels, ids or names) that alert for every job whose notify names no
# channel, on every event; env: comma-separated or a JSON list.
ALERT_CHANNELS = []
# How often each node's clock-driven alert checks run (re-alerts and ends of flapping due with no
# new run, passed deadlines): one indexed read each of the records due, nothing when none is.
ALERT_CHECK_SECONDS = 1.0
# Schedule adherence: how often a job with an adherence_target has its figures computed (for
# `adherence_low` and /metrics' texium_job_schedule_adherence_ratio); one read of its records each.
ADHERENCE_CHECK_SECONDS = 60.0
# Heartbeat monitors' pings (/ping/<token>): at most this many per minute per token, and per
# client address (more answer 429 with Retry-After).
MONITOR_PINGS_PER_MINUTE = 60
MONITOR_PINGS_PER_ADDRESS_PER_MINUTE = 600
# Trigger URLs (POST /trigger/<token>): at most this many runs per minute per token (more answer
# 429 with Retry-After).
TRIGGER_RUNS_PER_MINUTE = 60
CHANNEL_HTTPS_ONLY = True  # every URL a channel sends to must be https (off: plain http allowed too)
# Grouping: past ALERT_DIGEST_AFTER messages to one channel within ALERT_DIGEST_SECONDS (from the
# window's first message), the rest are held and sent as one digest when the window ends; 0 = off.
ALERT_DIGEST_SECONDS = 60
ALERT_DIGEST_AFTER = 3

# Built-in jobs
BACKUP_DIR = ""  # default DATA_DIR/backups
REPORT_DIR = ""  # default DATA_DIR/reports
SCRIPTS_DIR = ""  # default DATA_DIR/scripts
SMTP_HOST = ""  # empty = e-mail not configured
SMTP_PORT = 25
SMTP_USERNAME = ""
SMTP_PASSWORD = ""
SMTP_STARTTLS = False
# Send SMTP_USERNAME / SMTP_PASSWORD over a connection that is not encrypted (no STARTTLS, port
# not 465). Off: such a login is refused; sending without a login over plain TCP stays allowed.
SMTP_ALLOW_PLAINTEXT_LOGIN = False
SMTP_FROM = "texium@localhost"
SMTP_TIMEOUT = 30
# EmailNotificationJob jobs owned by a `user` (not an admin) send only to these recipient domains
# (exact names; empty = only admins' jobs send mail), at most EMAIL_MAX_PER_HOUR an hour per owner.
EMAIL_ALLOWED_DOMAINS = []  # e.g. ["example.com"]; env: comma-separated
EMAIL_MAX_PER_HOUR = 20  # 0 = no limit

# Outbound connections of the webhook and health-check jobs. Refused by default, checked on the
# resolved address at connect time: loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, so
# the cloud metadata address 169.254.169.254, and fe80::/10), multicast, unspecified (0.0.0.0)
# and reserved addresses. Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed.
OUTBOUND_ALLOW = []  # CIDR networks always allowed, e.g. ["127.0.0.0/8"]; env: comma-separated
OUTBOUND_DENY_PRIVATE = False  # true: refuse private (non-public) addresses too, unless in OUTBOUND_ALLOW
