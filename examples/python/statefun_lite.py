"""A small remote-function library for StateFun's HTTP request-reply protocol.

It speaks the same wire protocol as Apache Flink StateFun's SDKs (package
``io.statefun.sdk.reqreply``), so a function written with it can be served to
Statecraft or to a StateFun cluster. It needs nothing but the Python standard
library and ``google.protobuf`` (Debian: ``apt-get install python3-protobuf``):
there is no protoc step and no generated ``_pb2`` module. Instead the message
classes are built when this module is imported, from descriptors written out
below field by field, so the whole protocol is readable in one place.

A function is a plain callable bound to a typename::

    functions = Functions()

    @functions.bind(typename='example/greeter', specs=[ValueSpec('seen', IntType)])
    def greet(context: Context, message: Message) -> None:
        context.storage.seen = (context.storage.seen or 0) + 1

    serve(functions, port=8000)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Generic, NamedTuple, Optional, Sequence, TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

T = TypeVar('T')

# ---- the protocol's messages, described by hand --------------------------------------------------
#
# Each field is (name, number, type, message-or-enum name); a leading '*' on the name marks a repeated
# field. Names not starting with '.' are relative to the file's package.

_Field = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    'string': _Field.TYPE_STRING, 'bytes': _Field.TYPE_BYTES, 'bool': _Field.TYPE_BOOL,
    'int32': _Field.TYPE_INT32, 'int64': _Field.TYPE_INT64,
    'float': _Field.TYPE_FLOAT, 'double': _Field.TYPE_DOUBLE,
}


def _message(name: str, fields: Sequence[tuple[str, int, str]], nested: Sequence[Any] = (),
             enums: Sequence[tuple[str, dict[str, int]]] = (), oneof: Optional[tuple[str, set[str]]] = None,
             package: str = '') -> descriptor_pb2.DescriptorProto:
    """A DescriptorProto; a field type is a scalar name, `message:Name` or `enum:Name`."""
    proto = descriptor_pb2.DescriptorProto(name=name)
    if oneof is not None:
        proto.oneof_decl.add(name=oneof[0])
    for field_name, number, kind in fields:
        repeated = field_name.startswith('*')
        field = proto.field.add(name=field_name.lstrip('*'), number=number)
        field.label = _Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL
        if kind in _SCALARS:
            field.type = _SCALARS[kind]
        else:
            category, type_name = kind.split(':')
            field.type = _Field.TYPE_MESSAGE if category == 'message' else _Field.TYPE_ENUM
            field.type_name = f'.{package}.{type_name}'
        if oneof is not None and field.name in oneof[1]:
            field.oneof_index = 0
    proto.nested_type.extend(nested)
    for enum_name, values in enums:
        enum = proto.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    return proto


_RR = 'io.statefun.sdk.reqreply'
_TYPES = 'io.statefun.sdk.types'


def _request_reply_file() -> descriptor_pb2.FileDescriptorProto:
    def m(name: str, fields: Sequence[tuple[str, int, str]], **more: Any) -> descriptor_pb2.DescriptorProto:
        return _message(name, fields, package=_RR, **more)

    file = descriptor_pb2.FileDescriptorProto(name='statefun_lite/request-reply.proto', package=_RR, syntax='proto3')
    file.message_type.extend([
        m('Address', [('namespace', 1, 'string'), ('type', 2, 'string'), ('id', 3, 'string')]),
        m('TypedValue', [('typename', 1, 'string'), ('has_value', 2, 'bool'), ('value', 3, 'bytes')]),
        m('ToFunction', [('invocation', 100, 'message:ToFunction.InvocationBatchRequest')],
          oneof=('request', {'invocation'}), nested=[
            m('PersistedValue', [('state_name', 1, 'string'), ('state_value', 2, 'message:TypedValue')]),
            m('Invocation', [('caller', 1, 'message:Address'), ('argument', 2, 'message:TypedValue')]),
            m('InvocationBatchRequest', [('target', 1, 'message:Address'),
                                         ('*state', 2, 'message:ToFunction.PersistedValue'),
                                         ('*invocations', 3, 'message:ToFunction.Invocation')]),
        ]),
        m('FromFunction', [('invocation_result', 100, 'message:FromFunction.InvocationResponse'),
                           ('incomplete_invocation_context', 101, 'message:FromFunction.IncompleteInvocationContext')],
          oneof=('response', {'invocation_result', 'incomplete_invocation_context'}), nested=[
            m('PersistedValueMutation', [('mutation_type', 1, 'enum:FromFunction.PersistedValueMutation.MutationType'),
                                         ('state_name', 2, 'string'), ('state_value', 3, 'message:TypedValue')],
              enums=[('MutationType', {'DELETE': 0, 'MODIFY': 1})]),
            m('Invocation', [('target', 1, 'message:Address'), ('argument', 2, 'message:TypedValue')]),
            m('DelayedInvocation', [('delay_in_ms', 1, 'int64'), ('target', 2, 'message:Address'),
                                    ('argument', 3, 'message:TypedValue'), ('is_cancellation_request', 10, 'bool'),
                                    ('cancellation_token', 11, 'string')]),
            m('EgressMessage', [('egress_namespace', 1, 'string'), ('egress_type', 2, 'string'),
                                ('argument', 3, 'message:TypedValue')]),
            m('InvocationResponse', [('*state_mutations', 1, 'message:FromFunction.PersistedValueMutation'),
                                     ('*outgoing_messages', 2, 'message:FromFunction.Invocation'),
                                     ('*delayed_invocations', 3, 'message:FromFunction.DelayedInvocation'),
                                     ('*outgoing_egresses', 4, 'message:FromFunction.EgressMessage')]),
            m('ExpirationSpec', [('mode', 1, 'enum:FromFunction.ExpirationSpec.ExpireMode'),
                                 ('expire_after_millis', 2, 'int64')],
              enums=[('ExpireMode', {'NONE': 0, 'AFTER_WRITE': 1, 'AFTER_INVOKE': 2})]),
            m('PersistedValueSpec', [('state_name', 1, 'string'),
                                     ('expiration_spec', 2, 'message:FromFunction.ExpirationSpec'),
                                     ('type_typename', 3, 'string')]),
            m('IncompleteInvocationContext', [('*missing_values', 1, 'message:FromFunction.PersistedValueSpec')]),
        ]),
    ])
    return file


def _types_file() -> descriptor_pb2.FileDescriptorProto:
    """The built-in types wrap their value in a one-field message, as StateFun's SDKs do."""
    file = descriptor_pb2.FileDescriptorProto(name='statefun_lite/types.proto', package=_TYPES, syntax='proto3')
    for wrapper, kind in [('IntWrapper', 'int32'), ('LongWrapper', 'int64'), ('StringWrapper', 'string'),
                          ('BooleanWrapper', 'bool'), ('FloatWrapper', 'float'), ('DoubleWrapper', 'double')]:
        file.message_type.append(_message(wrapper, [('value', 1, kind)]))
    return file


# A private pool, so these descriptors never clash with a real StateFun SDK loaded in the same process.
_pool = descriptor_pool.DescriptorPool()
_pool.Add(_request_reply_file())
_pool.Add(_types_file())


def _class(full_name: str) -> Any:
    descriptor = _pool.FindMessageTypeByName(full_name)
    get_class = getattr(message_factory, 'GetMessageClass', None)  # protobuf >= 4.22; GetPrototype before
    return get_class(descriptor) if get_class else message_factory.MessageFactory(_pool).GetPrototype(descriptor)


_Address = _class(f'{_RR}.Address')
_TypedValue = _class(f'{_RR}.TypedValue')
_ToFunction = _class(f'{_RR}.ToFunction')
_FromFunction = _class(f'{_RR}.FromFunction')
_MODIFY, _DELETE = 1, 0
_AFTER_WRITE, _AFTER_INVOKE = 1, 2

# ---- types: a typename plus how to turn values into bytes and back ---------------------------------


class Type(Generic[T]):
    """A value type as the runtime sees it: a typename naming opaque bytes, and the codec for them."""

    def __init__(self, typename: str, serialize: Callable[[T], bytes], deserialize: Callable[[bytes], T]) -> None:
        self.typename = typename
        self.serialize = serialize
        self.deserialize = deserialize

    def __repr__(self) -> str:
        return f'Type({self.typename!r})'


def _wrapper_type(name: str, wrapper: str) -> Type[Any]:
    cls = _class(f'{_TYPES}.{wrapper}')

    def deserialize(data: bytes) -> Any:
        parsed = cls()
        parsed.ParseFromString(data)
        return parsed.value

    return Type(f'io.statefun.types/{name}', lambda value: cls(value=value).SerializeToString(), deserialize)


IntType: Type[int] = _wrapper_type('int', 'IntWrapper')
LongType: Type[int] = _wrapper_type('long', 'LongWrapper')
StringType: Type[str] = _wrapper_type('string', 'StringWrapper')
BoolType: Type[bool] = _wrapper_type('bool', 'BooleanWrapper')
FloatType: Type[float] = _wrapper_type('float', 'FloatWrapper')
DoubleType: Type[float] = _wrapper_type('double', 'DoubleWrapper')


def json_type(typename: str) -> Type[Any]:
    """Values stored and sent as UTF-8 JSON under a typename of your choosing (`namespace/name`)."""
    _split(typename)
    return Type(typename, lambda value: json.dumps(value, separators=(',', ':')).encode('utf-8'),
                lambda data: json.loads(data.decode('utf-8')))


def _split(typename: str) -> tuple[str, str]:
    """`namespace/name` into its parts. Exactly one slash: runtimes disagree on where to split a second one."""
    namespace, slash, name = typename.partition('/')
    if not namespace or not slash or not name or '/' in name:
        raise ValueError(f'{typename!r} is not a typename: expected namespace/name')
    return namespace, name


# ---- what a function declares and sees -----------------------------------------------------------


@dataclass(frozen=True)
class ValueSpec:
    """A persisted value of a function. The runtime keeps it; it arrives with every request.

    At most one expiry: `expire_after_write_ms` (since it was last written) or `expire_after_call_ms`
    (since the function was last invoked for its address).
    """

    name: str
    type: Type[Any]
    expire_after_write_ms: Optional[int] = None
    expire_after_call_ms: Optional[int] = None

    def __post_init__(self) -> None:
        # Values are attributes of `context.storage`, so names must be usable as attributes.
        if not self.name.isidentifier() or self.name.startswith('_'):
            raise ValueError(f'value name {self.name!r} must be an identifier not starting with _')
        if self.expire_after_write_ms is not None and self.expire_after_call_ms is not None:
            raise ValueError(f'value {self.name}: expire after write or after call, not both')
        for ms in (self.expire_after_write_ms, self.expire_after_call_ms):
            if ms is not None and ms <= 0:
                raise ValueError(f'value {self.name}: an expiry must be a positive number of milliseconds')


class Address(NamedTuple):
    """A function instance: its typename (`namespace/type`) and id."""

    namespace: str
    type: str
    id: str

    @property
    def typename(self) -> str:
        return f'{self.namespace}/{self.type}'

    def __str__(self) -> str:
        return f'{self.typename}/{self.id}'


class Message:
    """An incoming message: a typename and bytes, decoded on request with the matching type."""

    def __init__(self, typename: str, value: Optional[bytes]) -> None:
        self.typename = typename
        self.raw = value

    def is_type(self, type: Type[Any]) -> bool:
        return self.typename == type.typename

    def as_type(self, type: Type[T]) -> T:
        if not self.is_type(type):
            raise TypeError(f'message is {self.typename}, not {type.typename}')
        if self.raw is None:
            raise ValueError(f'message of type {self.typename} carries no value')
        return type.deserialize(self.raw)

    def is_int(self) -> bool:
        return self.is_type(IntType)

    def as_int(self) -> int:
        return self.as_type(IntType)

    def is_long(self) -> bool:
        return self.is_type(LongType)

    def as_long(self) -> int:
        return self.as_type(LongType)

    def is_string(self) -> bool:
        return self.is_type(StringType)

    def as_string(self) -> str:
        return self.as_type(StringType)

    def is_bool(self) -> bool:
        return self.is_type(BoolType)

    def as_bool(self) -> bool:
        return self.as_type(BoolType)

    def is_float(self) -> bool:
        return self.is_type(FloatType)

    def as_float(self) -> float:
        return self.as_type(FloatType)

    def is_double(self) -> bool:
        return self.is_type(DoubleType)

    def as_double(self) -> float:
        return self.as_type(DoubleType)

    def as_json(self) -> Any:
        """The value parsed as JSON, whatever the typename: JSON types are named by their users."""
        if self.raw is None:
            raise ValueError(f'message of type {self.typename} carries no value')
        return json.loads(self.raw.decode('utf-8'))

    def __repr__(self) -> str:
        return f'Message({self.typename!r}, {self.raw!r})'


class _Cell:
    """One declared value during a batch: its current bytes and whether the function changed it."""

    __slots__ = ('spec', 'typename', 'raw', 'changed')

    def __init__(self, spec: ValueSpec, typename: str, raw: Optional[bytes]) -> None:
        self.spec, self.typename, self.raw, self.changed = spec, typename, raw, False


class Storage:
    """A function's declared values as attributes: read, assign, and `del` (or assign None) to delete.

    A read decodes the current bytes every time, so it always shows what would be persisted: change a
    JSON value in place and assign it back, or the change is lost.
    """

    def __init__(self, cells: dict[str, _Cell]) -> None:
        object.__setattr__(self, '_cells', cells)

    def _cell(self, name: str) -> _Cell:
        cells: dict[str, _Cell] = object.__getattribute__(self, '_cells')
        if name not in cells:
            raise AttributeError(f'no value {name!r} is declared (declared: {", ".join(cells) or "none"})')
        return cells[name]

    def __getattr__(self, name: str) -> Any:
        cell = self._cell(name)
        if cell.raw is None:
            return None
        if cell.typename != cell.spec.type.typename:
            # Bytes of another type (the spec changed since they were written) would decode to garbage.
            raise TypeError(f'value {name} is stored as {cell.typename}, declared as {cell.spec.type.typename}')
        return cell.spec.type.deserialize(cell.raw)

    def __setattr__(self, name: str, value: Any) -> None:
        cell = self._cell(name)
        cell.raw = None if value is None else cell.spec.type.serialize(value)  # fail here, at the write
        cell.typename, cell.changed = cell.spec.type.typename, True

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)


def _typed_value(value: Any, type: Type[Any]) -> Any:
    return _TypedValue(typename=type.typename, has_value=True, value=type.serialize(value))


class Context:
    """What one invocation sees: who it is, who called, its storage, and where to send things."""

    def __init__(self, address: Address, caller: Optional[Address], storage: Storage, response: Any) -> None:
        self.address = address
        self.caller = caller
        self.storage = storage
        self._response = response  # the batch's InvocationResponse: effects are appended in order

    def send(self, typename: str, id: str, value: Any, type: Type[Any]) -> None:
        """Sends `value` to the function `typename` (namespace/type) with id `id`."""
        namespace, name = _split(typename)
        self._response.outgoing_messages.add(target=_Address(namespace=namespace, type=name, id=id),
                                             argument=_typed_value(value, type))

    def send_after(self, delay_ms: int, typename: str, id: str, value: Any, type: Type[Any],
                   cancellation_token: Optional[str] = None) -> None:
        """Like send, delivered `delay_ms` later; a token lets `cancel_delayed_message` take it back."""
        if not isinstance(delay_ms, int) or delay_ms < 0:
            raise ValueError(f'delay_ms must be a whole number of milliseconds >= 0, not {delay_ms!r}')
        namespace, name = _split(typename)
        delayed = self._response.delayed_invocations.add(
            delay_in_ms=delay_ms, target=_Address(namespace=namespace, type=name, id=id),
            argument=_typed_value(value, type))
        if cancellation_token:
            delayed.cancellation_token = cancellation_token

    def cancel_delayed_message(self, token: str) -> None:
        if not token:
            raise ValueError('a cancellation token must be a non-empty string')
        self._response.delayed_invocations.add(is_cancellation_request=True, cancellation_token=token)

    def send_egress(self, namespace_slash_type: str, value: Any, type: Type[Any]) -> None:
        """Sends `value` to the egress `namespace/type`."""
        namespace, name = _split(namespace_slash_type)
        self._response.outgoing_egresses.add(egress_namespace=namespace, egress_type=name,
                                             argument=_typed_value(value, type))


# ---- the registry: from a ToFunction request to a FromFunction answer ----------------------------

Handler = Callable[[Context, Message], None]
H = TypeVar('H', bound=Handler)


class RequestError(Exception):
    """A request answered with something other than a result; `status` is the HTTP status to use."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad_request(why: str) -> RequestError:
    return RequestError(400, f'not a valid ToFunction request: {why}')


def _address(message: Any, where: str) -> Address:
    if not message.namespace or not message.type:
        raise _bad_request(f'{where} has no address (namespace and type)')
    return Address(message.namespace, message.type, message.id)


def _incomplete(missing: Sequence[ValueSpec]) -> bytes:
    """Asks the runtime to register these values and send the batch again; nothing has run."""
    result = _FromFunction()
    for spec in missing:
        value = result.incomplete_invocation_context.missing_values.add(state_name=spec.name,
                                                                         type_typename=spec.type.typename)
        value.expiration_spec.SetInParent()  # present even for "never expires" (mode NONE)
        if spec.expire_after_write_ms is not None:
            value.expiration_spec.mode, value.expiration_spec.expire_after_millis = \
                _AFTER_WRITE, spec.expire_after_write_ms
        elif spec.expire_after_call_ms is not None:
            value.expiration_spec.mode, value.expiration_spec.expire_after_millis = \
                _AFTER_INVOKE, spec.expire_after_call_ms
    return result.SerializeToString()


class Functions:
    """The functions one process serves, by typename (namespace/type)."""

    def __init__(self) -> None:
        self._bound: dict[str, tuple[Handler, tuple[ValueSpec, ...]]] = {}

    def bind(self, typename: str, specs: Sequence[ValueSpec] = ()) -> Callable[[H], H]:
        """Decorator: `@functions.bind(typename='ns/name', specs=[ValueSpec(...)])`."""
        def register(handler: H) -> H:
            self.register(typename, handler, specs)
            return handler
        return register

    def register(self, typename: str, handler: Handler, specs: Sequence[ValueSpec] = ()) -> None:
        _split(typename)
        if typename in self._bound:
            raise ValueError(f'function {typename} is bound twice')
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f'function {typename} declares a value name twice: {names}')
        self._bound[typename] = (handler, tuple(specs))

    def handle(self, body: bytes) -> bytes:
        """Answers one serialized ToFunction with a serialized FromFunction, or raises RequestError."""
        try:
            request = _ToFunction.FromString(body)
        except (DecodeError, ValueError) as error:
            raise _bad_request(str(error) or type(error).__name__) from None
        if not request.HasField('invocation'):
            raise _bad_request('no invocation batch')
        batch = request.invocation
        target = _address(batch.target, 'the batch target')
        if not batch.invocations:
            raise _bad_request('a batch needs at least one invocation')
        invocations: list[tuple[Optional[Address], Message]] = []
        for index, invocation in enumerate(batch.invocations):
            if not invocation.HasField('argument'):
                raise _bad_request(f'invocation {index} has no argument')
            caller = _address(invocation.caller, f'invocation {index} caller') \
                if invocation.HasField('caller') else None
            argument = invocation.argument
            # Empty bytes with has_value set are a real value: IntWrapper(0) serializes to nothing.
            present = argument.has_value or len(argument.value) > 0
            invocations.append((caller, Message(argument.typename, argument.value if present else None)))

        if target.typename not in self._bound:
            raise RequestError(404, f'no function {target.typename} here (served: {", ".join(self._bound)})')
        handler, specs = self._bound[target.typename]
        state = {value.state_name: value.state_value for value in batch.state}
        missing = [spec for spec in specs if spec.name not in state]
        if missing:
            return _incomplete(missing)

        cells = {}
        for spec in specs:
            value = state[spec.name]
            present = value.has_value or len(value.value) > 0
            cells[spec.name] = _Cell(spec, value.typename, value.value if present else None)
        storage = Storage(cells)
        result = _FromFunction()
        response = result.invocation_result
        response.SetInParent()  # a result with no effects is still a result
        for caller, message in invocations:
            try:
                handler(Context(target, caller, storage, response), message)
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                raise RequestError(500, f'{target.typename} failed: {type(error).__name__}: {error}') from error
        for cell in cells.values():
            if not cell.changed:
                continue
            if cell.raw is None:
                response.state_mutations.add(mutation_type=_DELETE, state_name=cell.spec.name)
            else:
                response.state_mutations.add(mutation_type=_MODIFY, state_name=cell.spec.name, state_value=_TypedValue(
                    typename=cell.typename, has_value=True, value=cell.raw))
        return result.SerializeToString()


# ---- HTTP ------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """POST any path with a ToFunction body; keep-alive, so every answer carries a Content-Length."""

    protocol_version = 'HTTP/1.1'
    server_version = 'statefun-lite'
    timeout = 300  # seconds an idle keep-alive connection may hold its thread
    functions: Functions

    def do_POST(self) -> None:
        try:
            payload, status, content_type = self.functions.handle(self._read_body()), 200, 'application/octet-stream'
        except RequestError as error:
            payload, status, content_type = str(error).encode('utf-8'), error.status, 'text/plain; charset=utf-8'
        self._reply(status, payload, content_type)

    def _refuse(self) -> None:
        self._reply(405, b'POST a ToFunction request', 'text/plain; charset=utf-8', allow='POST')

    do_GET = do_PUT = do_DELETE = do_PATCH = _refuse

    def _read_body(self) -> bytes:
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            return self._read_chunked()
        length = self.headers.get('Content-Length', '')
        if not length.isdigit():
            self.close_connection = True  # without a length we cannot find the next request
            raise RequestError(411 if not length else 400, 'a request needs a Content-Length')
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            self.close_connection = True
            raise RequestError(400, 'the request body ended early')
        return body

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b';')[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise RequestError(400, 'malformed chunked body') from None
            if size == 0:
                while self.rfile.readline(65536) not in (b'\r\n', b'\n', b''):
                    pass  # trailers
                return b''.join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _reply(self, status: int, payload: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(payload)))
        for name, value in headers.items():
            self.send_header(name.capitalize(), value)
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: stdout carries only the "listening on" line, stderr only failures


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a process that died is removed; one that still answers is not."""
    if not os.path.exists(path) or not stat.S_ISSOCK(os.stat(path).st_mode):
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
    raise OSError(f'{path} is in use by another server')


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM, to leave serve_forever at once rather than at its next poll."""


def _stop(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while cleaning up just ends the process
    raise _Stop


def serve(functions: Functions, host: str = '127.0.0.1', port: int = 0, unix_socket: Optional[str] = None) -> None:
    """Serves `functions` until SIGTERM or Ctrl-C; port 0 lets the OS choose.

    Prints one line to stdout once listening (`listening on http://127.0.0.1:8000/`), so a script that
    started this process can read the port from it.
    """
    handler = type('Handler', (_Handler,), {'functions': functions})
    server: socketserver.BaseServer
    if unix_socket is not None:
        _remove_stale_socket(unix_socket)
        server = _UnixHTTPServer(unix_socket, handler)
        url = f'http+unix://{unix_socket}/'
    else:
        server = (_IPv6HTTPServer if ':' in host else ThreadingHTTPServer)((host, port), handler)
        url = f'http://{f"[{host}]" if ":" in host else host}:{server.server_address[1]}/'
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if main_thread:
            signal.signal(signal.SIGTERM, _stop)
        print(f'listening on {url}', flush=True)
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()
        if unix_socket is not None and os.path.exists(unix_socket):
            os.unlink(unix_socket)
