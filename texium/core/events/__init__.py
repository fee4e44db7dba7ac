"""Consumers of "a run ended": the failure and recovery alerts and the mail they send. They
run off the firing path; the firing core (scheduling/) calls them through a narrow hook and
never imports them."""
