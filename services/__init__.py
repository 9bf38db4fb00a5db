"""llmgw services: each a plain async core plus a thin gRPC adapter (``llmgw.services.<name>``)."""
