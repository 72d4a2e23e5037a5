"""Notification channels: the in-app inbox, e-mail over SMTP and signed webhooks."""
