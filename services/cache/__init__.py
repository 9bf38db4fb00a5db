"""The response cache: canonical keys, TTL, compressed entries in Redis, per-tenant stats."""
