"""llmgw: an LLM gateway as event-streaming microservices.

Packages:
    llmgw.kit           the shared service kit (settings, logging, errors, gRPC bootstrap, Kafka)
    llmgw.domain        plain value types shared by every core (no gRPC types)
    llmgw.prompts       the prompt registry
    llmgw.services.*    one package per service: ingress, limiter, cache, router, drift
    llmgw.<area>.v1     generated protobuf/gRPC code (``make proto``; never edited by hand)
"""

__version__ = "0.1.0"
