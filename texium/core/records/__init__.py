"""What Texium keeps and clients read: users, servers, API keys, the audit log, the execution
history (lists, single runs, statistics) and what the built-in jobs leave behind."""
