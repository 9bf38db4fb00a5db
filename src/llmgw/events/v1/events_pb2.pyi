from llmgw.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestEvent(_message.Message):
    __slots__ = ("schema_version", "request_id", "tenant", "time", "prompt", "prompt_version", "label", "route", "variables", "messages", "sampling", "metadata", "stream", "input_sha256", "input_text", "tools", "tool_choice", "response_format", "model", "trace_id", "key_id")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    INPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    request_id: str
    tenant: str
    time: float
    prompt: str
    prompt_version: str
    label: str
    route: str
    variables: _containers.ScalarMap[str, str]
    messages: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Message]
    sampling: _gateway_pb2.Sampling
    metadata: _containers.ScalarMap[str, str]
    stream: bool
    input_sha256: str
    input_text: str
    tools: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Tool]
    tool_choice: _gateway_pb2.ToolChoice
    response_format: _gateway_pb2.ResponseFormat
    model: str
    trace_id: str
    key_id: str
    def __init__(self, schema_version: _Optional[int] = ..., request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., time: _Optional[float] = ..., prompt: _Optional[str] = ..., prompt_version: _Optional[str] = ..., label: _Optional[str] = ..., route: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., messages: _Optional[_Iterable[_Union[_gateway_pb2.Message, _Mapping]]] = ..., sampling: _Optional[_Union[_gateway_pb2.Sampling, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., stream: _Optional[bool] = ..., input_sha256: _Optional[str] = ..., input_text: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_gateway_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[_gateway_pb2.ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[_gateway_pb2.ResponseFormat, _Mapping]] = ..., model: _Optional[str] = ..., trace_id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class ResponseEvent(_message.Message):
    __slots__ = ("schema_version", "request_id", "tenant", "time", "prompt", "prompt_version", "route", "text", "provider", "model", "status", "error", "latency_ms", "usage", "cache_hit", "attempts", "finish_reason", "truncated_fields", "tool_calls", "trace_id", "key_id", "charged_nanousd", "cache_tier", "cache_similarity")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGED_NANOUSD_FIELD_NUMBER: _ClassVar[int]
    CACHE_TIER_FIELD_NUMBER: _ClassVar[int]
    CACHE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    request_id: str
    tenant: str
    time: float
    prompt: str
    prompt_version: str
    route: str
    text: str
    provider: str
    model: str
    status: str
    error: str
    latency_ms: float
    usage: _gateway_pb2.Usage
    cache_hit: bool
    attempts: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Attempt]
    finish_reason: str
    truncated_fields: _containers.RepeatedScalarFieldContainer[str]
    tool_calls: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ToolCall]
    trace_id: str
    key_id: str
    charged_nanousd: int
    cache_tier: str
    cache_similarity: float
    def __init__(self, schema_version: _Optional[int] = ..., request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., time: _Optional[float] = ..., prompt: _Optional[str] = ..., prompt_version: _Optional[str] = ..., route: _Optional[str] = ..., text: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., latency_ms: _Optional[float] = ..., usage: _Optional[_Union[_gateway_pb2.Usage, _Mapping]] = ..., cache_hit: _Optional[bool] = ..., attempts: _Optional[_Iterable[_Union[_gateway_pb2.Attempt, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., truncated_fields: _Optional[_Iterable[str]] = ..., tool_calls: _Optional[_Iterable[_Union[_gateway_pb2.ToolCall, _Mapping]]] = ..., trace_id: _Optional[str] = ..., key_id: _Optional[str] = ..., charged_nanousd: _Optional[int] = ..., cache_tier: _Optional[str] = ..., cache_similarity: _Optional[float] = ...) -> None: ...
