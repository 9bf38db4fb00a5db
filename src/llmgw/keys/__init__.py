"""API keys as data (records, a Redis store, a read-only file), the ring an ingress
authenticates with, and the spend ledger that enforces dollar budgets. docs/keys.md."""

from llmgw.keys.ledger import Hold, Refusal, SpendLedger
from llmgw.keys.model import Budget, KeyRecord, Scopes, Secret, TenantRecord
from llmgw.keys.ring import Identity, KeyFollower, KeyRing
from llmgw.keys.store import KeyData, RedisKeyStore, load_key_file

__all__ = [
    "Budget", "Hold", "Identity", "KeyData", "KeyFollower", "KeyRecord", "KeyRing", "RedisKeyStore", "Refusal",
    "Scopes", "Secret", "SpendLedger", "TenantRecord", "load_key_file",
]
