"""The router: renders the provider variant of a prompt, calls providers through the official
SDKs, classifies errors once at the SDK boundary, and falls back along the route."""
