from llmgw.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteRequest(_message.Message):
    __slots__ = ("request_id", "route", "prompt", "prompt_version", "variables", "messages", "sampling", "tenant", "tools", "tool_choice", "response_format")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    route: str
    prompt: str
    prompt_version: str
    variables: _containers.ScalarMap[str, str]
    messages: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Message]
    sampling: _gateway_pb2.Sampling
    tenant: str
    tools: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Tool]
    tool_choice: _gateway_pb2.ToolChoice
    response_format: _gateway_pb2.ResponseFormat
    def __init__(self, request_id: _Optional[str] = ..., route: _Optional[str] = ..., prompt: _Optional[str] = ..., prompt_version: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., messages: _Optional[_Iterable[_Union[_gateway_pb2.Message, _Mapping]]] = ..., sampling: _Optional[_Union[_gateway_pb2.Sampling, _Mapping]] = ..., tenant: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_gateway_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[_Union[_gateway_pb2.ToolChoice, _Mapping]] = ..., response_format: _Optional[_Union[_gateway_pb2.ResponseFormat, _Mapping]] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("text", "provider", "model", "usage", "attempts", "finish_reason", "tool_calls")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    text: str
    provider: str
    model: str
    usage: _gateway_pb2.Usage
    attempts: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Attempt]
    finish_reason: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ToolCall]
    def __init__(self, text: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_gateway_pb2.Usage, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[_gateway_pb2.Attempt, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_gateway_pb2.ToolCall, _Mapping]]] = ...) -> None: ...

class RouteChunk(_message.Message):
    __slots__ = ("delta", "final", "provider", "model", "usage", "attempts", "finish_reason", "tool_calls")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    delta: str
    final: bool
    provider: str
    model: str
    usage: _gateway_pb2.Usage
    attempts: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.Attempt]
    finish_reason: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.ToolCallDelta]
    def __init__(self, delta: _Optional[str] = ..., final: _Optional[bool] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_gateway_pb2.Usage, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[_gateway_pb2.Attempt, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_gateway_pb2.ToolCallDelta, _Mapping]]] = ...) -> None: ...
