"""The ingress: auth, validation, and orchestration of limiter, cache and router per request."""
