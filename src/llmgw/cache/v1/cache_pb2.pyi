from llmgw.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyMaterial(_message.Message):
    __slots__ = ("tenant", "prompt", "prompt_version", "variables", "messages", "route", "sampling", "targets", "tools", "tool_choice", "response_format")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    prompt: str
    prompt_version: str
    variables: _containers.ScalarMap[str, str]
    messages: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Message]
    route: str
    sampling: _gateway_pb2.Sampling
    targets: str
    tools: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Tool]
    tool_choice: _gateway_pb2.ToolChoice
    response_format: _gateway_pb2.ResponseFormat
    def __init__(self, tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., prompt_version: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., messages: _Optional[_Iterable[_Union[_gateway_pb2.Message, _Mapping]]] = ..., route: _Optional[str] = ..., sampling: _Optional[_Union[_gateway_pb2.Sampling, _Mapping]] = ..., targets: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_gateway_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[_gateway_pb2.ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[_gateway_pb2.ResponseFormat, _Mapping]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("text", "provider", "model", "usage", "chunks", "stored_at", "finish_reason", "tool_calls", "pieces")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    text: str
    provider: str
    model: str
    usage: _gateway_pb2.Usage
    chunks: _containers.RepeatedScalarFieldContainer[str]
    stored_at: float
    finish_reason: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ToolCall]
    pieces: _containers.RepeatedCompositeFieldContainer[Piece]
    def __init__(self, text: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_gateway_pb2.Usage, _Mapping]] = ..., chunks: _Optional[_Iterable[str]] = ..., stored_at: _Optional[float] = ..., finish_reason: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_gateway_pb2.ToolCall, _Mapping]]] = ..., pieces: _Optional[_Iterable[_Union[Piece, _Mapping]]] = ...) -> None: ...

class Piece(_message.Message):
    __slots__ = ("text", "tool_calls")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ToolCallDelta]
    def __init__(self, text: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_gateway_pb2.ToolCallDelta, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("key", "read")
    KEY_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    key: KeyMaterial
    read: bool
    def __init__(self, key: _Optional[_Union[KeyMaterial, _Mapping]] = ..., read: _Optional[bool] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("hit", "entry", "key", "cacheable", "leader", "in_flight", "lock_token", "lock_ttl_ms", "tier", "similarity", "semantic")
    HIT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CACHEABLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOCK_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    entry: Entry
    key: str
    cacheable: bool
    leader: bool
    in_flight: bool
    lock_token: str
    lock_ttl_ms: int
    tier: str
    similarity: float
    semantic: str
    def __init__(self, hit: _Optional[bool] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., key: _Optional[str] = ..., cacheable: _Optional[bool] = ..., leader: _Optional[bool] = ..., in_flight: _Optional[bool] = ..., lock_token: _Optional[str] = ..., lock_ttl_ms: _Optional[int] = ..., tier: _Optional[str] = ..., similarity: _Optional[float] = ..., semantic: _Optional[str] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("key", "timeout_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    key: KeyMaterial
    timeout_ms: int
    def __init__(self, key: _Optional[_Union[KeyMaterial, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class WaitResponse(_message.Message):
    __slots__ = ("hit", "entry", "key", "leader", "lock_token")
    HIT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    entry: Entry
    key: str
    leader: bool
    lock_token: str
    def __init__(self, hit: _Optional[bool] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., key: _Optional[str] = ..., leader: _Optional[bool] = ..., lock_token: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("key", "lock_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    lock_token: str
    def __init__(self, key: _Optional[str] = ..., lock_token: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("tenant", "prompt", "version")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    prompt: str
    version: str
    def __init__(self, tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("key", "entry", "tenant", "prompt", "route", "lock_token", "semantic")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    key: str
    entry: Entry
    tenant: str
    prompt: str
    route: str
    lock_token: str
    semantic: str
    def __init__(self, key: _Optional[str] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., route: _Optional[str] = ..., lock_token: _Optional[str] = ..., semantic: _Optional[str] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("tenant", "prompt")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    prompt: str
    def __init__(self, tenant: _Optional[str] = ..., prompt: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("hits", "misses", "stores", "tokens_saved", "cost_saved_usd", "semantic_hits")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_SAVED_FIELD_NUMBER: _ClassVar[int]
    COST_SAVED_USD_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_HITS_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    stores: int
    tokens_saved: int
    cost_saved_usd: float
    semantic_hits: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ..., stores: _Optional[int] = ..., tokens_saved: _Optional[int] = ..., cost_saved_usd: _Optional[float] = ..., semantic_hits: _Optional[int] = ...) -> None: ...
