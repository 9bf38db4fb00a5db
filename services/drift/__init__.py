"""The drift job: a Faust stream job that embeds request inputs and publishes drift statistics.

Modules: ``settings`` (typed config), ``stats`` (pure math, no Faust), ``text`` (what to embed),
``embed`` (sentence-transformers, offline), ``detector`` (per-segment state), ``app`` (the Faust
app factory, topics and agent), ``__main__`` (the worker plus its gRPC health endpoint).
"""
