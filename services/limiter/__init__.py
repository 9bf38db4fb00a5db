"""The rate limiter: GCRA limits on requests and tokens, decided atomically in Redis."""
