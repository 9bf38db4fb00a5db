from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescriptorEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("domain", "descriptor", "requests", "tokens", "request_id")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptor: _containers.RepeatedCompositeFieldContainer[DescriptorEntry]
    requests: int
    tokens: int
    request_id: str
    def __init__(self, domain: _Optional[str] = ..., descriptor: _Optional[_Iterable[_Union[DescriptorEntry, _Mapping]]] = ..., requests: _Optional[int] = ..., tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class LimitStatus(_message.Message):
    __slots__ = ("name", "unit", "limit", "remaining", "reset_after_ms", "shadow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit: str
    limit: int
    remaining: int
    reset_after_ms: int
    shadow: bool
    def __init__(self, name: _Optional[str] = ..., unit: _Optional[str] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_after_ms: _Optional[int] = ..., shadow: _Optional[bool] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("allowed", "retry_after_ms", "limit_name", "statuses", "reservation_id")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    retry_after_ms: int
    limit_name: str
    statuses: _containers.RepeatedCompositeFieldContainer[LimitStatus]
    reservation_id: str
    def __init__(self, allowed: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ..., limit_name: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[LimitStatus, _Mapping]]] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("reservation_id", "actual_tokens")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    actual_tokens: int
    def __init__(self, reservation_id: _Optional[str] = ..., actual_tokens: _Optional[int] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("refunded_tokens",)
    REFUNDED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    refunded_tokens: int
    def __init__(self, refunded_tokens: _Optional[int] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("domain", "descriptor", "pause_ms")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    PAUSE_MS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptor: _containers.RepeatedCompositeFieldContainer[DescriptorEntry]
    pause_ms: int
    def __init__(self, domain: _Optional[str] = ..., descriptor: _Optional[_Iterable[_Union[DescriptorEntry, _Mapping]]] = ..., pause_ms: _Optional[int] = ...) -> None: ...

class PauseResponse(_message.Message):
    __slots__ = ("paused_ms",)
    PAUSED_MS_FIELD_NUMBER: _ClassVar[int]
    paused_ms: int
    def __init__(self, paused_ms: _Optional[int] = ...) -> None: ...
