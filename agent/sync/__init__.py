"""Sync with the platform: the outbox, the link, commands, salvage of a lost outbox."""
