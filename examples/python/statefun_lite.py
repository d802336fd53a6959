"""A small library for remote functions on StateFun's HTTP request-reply protocol.

It speaks the wire protocol of Apache Flink StateFun (package ``io.statefun.sdk.reqreply``), so a
function written with it can serve Statecraft or a StateFun cluster. It needs only the standard
library and ``google.protobuf`` (Debian: ``apt-get install python3-protobuf``). There is no protoc
step and no generated ``_pb2`` module: the message classes are built at import time from the schema
table below, written from the protocol's field numbers, so the whole protocol is in one place.

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
from typing import Any, Callable, Generic, NamedTuple, Optional, Sequence, TypeVar, Union

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

T = TypeVar('T')

# ---- the protocol, as a schema table ------------------------------------------------------------
#
# One entry per message ("Outer.Inner" when nested, after its parent) holding its fields as
# "[repeated | oneof NAME] type name = number", or per enum holding its values. A field's type is a
# scalar or an entry of the table, named as in a .proto file: from the innermost scope outwards.

Schema = dict[str, Union[list[str], dict[str, int]]]

_REQUEST_REPLY: Schema = {
    'Address': ['string namespace = 1', 'string type = 2', 'string id = 3'],
    'TypedValue': ['string typename = 1', 'bool has_value = 2', 'bytes value = 3'],
    'ToFunction': ['oneof request InvocationBatchRequest invocation = 100'],
    'ToFunction.PersistedValue': ['string state_name = 1', 'TypedValue state_value = 2'],
    'ToFunction.Invocation': ['Address caller = 1', 'TypedValue argument = 2'],
    'ToFunction.InvocationBatchRequest': [
        'Address target = 1', 'repeated PersistedValue state = 2',
        'repeated Invocation invocations = 3'],
    'FromFunction': [
        'oneof response InvocationResponse invocation_result = 100',
        'oneof response IncompleteInvocationContext incomplete_invocation_context = 101'],
    'FromFunction.PersistedValueMutation': [
        'MutationType mutation_type = 1', 'string state_name = 2', 'TypedValue state_value = 3'],
    'FromFunction.PersistedValueMutation.MutationType': {'DELETE': 0, 'MODIFY': 1},
    'FromFunction.Invocation': ['Address target = 1', 'TypedValue argument = 2'],
    'FromFunction.DelayedInvocation': [
        'int64 delay_in_ms = 1', 'Address target = 2', 'TypedValue argument = 3',
        'bool is_cancellation_request = 10', 'string cancellation_token = 11'],
    'FromFunction.EgressMessage': [
        'string egress_namespace = 1', 'string egress_type = 2', 'TypedValue argument = 3'],
    'FromFunction.InvocationResponse': [
        'repeated PersistedValueMutation state_mutations = 1',
        'repeated Invocation outgoing_messages = 2',
        'repeated DelayedInvocation delayed_invocations = 3',
        'repeated EgressMessage outgoing_egresses = 4'],
    'FromFunction.ExpirationSpec': ['ExpireMode mode = 1', 'int64 expire_after_millis = 2'],
    'FromFunction.ExpirationSpec.ExpireMode': {'NONE': 0, 'AFTER_WRITE': 1, 'AFTER_INVOKE': 2},
    'FromFunction.PersistedValueSpec': [
        'string state_name = 1', 'ExpirationSpec expiration_spec = 2', 'string type_typename = 3'],
    'FromFunction.IncompleteInvocationContext': ['repeated PersistedValueSpec missing_values = 1'],
}

# The built-in types wrap their value in a one-field message. Ints and longs are fixed-width on the
# wire (sfixed32, sfixed64), not varints.
_WRAPPERS: Schema = {
    f'{name}Wrapper': [f'{scalar} value = 1'] for name, scalar in [
        ('Int', 'sfixed32'), ('Long', 'sfixed64'), ('String', 'string'),
        ('Boolean', 'bool'), ('Float', 'float'), ('Double', 'double')]
}

_Field = descriptor_pb2.FieldDescriptorProto
_SCALARS = {'string': _Field.TYPE_STRING, 'bytes': _Field.TYPE_BYTES, 'bool': _Field.TYPE_BOOL,
            'int64': _Field.TYPE_INT64, 'sfixed32': _Field.TYPE_SFIXED32,
            'sfixed64': _Field.TYPE_SFIXED64, 'float': _Field.TYPE_FLOAT,
            'double': _Field.TYPE_DOUBLE}


def _file(name: str, package: str, schema: Schema) -> descriptor_pb2.FileDescriptorProto:
    """A proto3 FileDescriptorProto from a schema table."""
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax='proto3')
    messages: dict[str, Any] = {}
    for path, body in schema.items():
        parent, _, short = path.rpartition('.')
        if isinstance(body, dict):
            enum = (messages[parent].enum_type if parent else file.enum_type).add(name=short)
            for value_name, number in body.items():
                enum.value.add(name=value_name, number=number)
            continue
        message = (messages[parent].nested_type if parent else file.message_type).add(name=short)
        messages[path] = message
        for line in body:
            words = line.replace('=', ' ').split()
            kind, field_name, field_number = words[-3:]
            field = message.field.add(name=field_name, number=int(field_number),
                                      label=_Field.LABEL_OPTIONAL)
            if words[0] == 'repeated':
                field.label = _Field.LABEL_REPEATED
            elif words[0] == 'oneof':
                if words[1] not in [oneof.name for oneof in message.oneof_decl]:
                    message.oneof_decl.add(name=words[1])
                field.oneof_index = [oneof.name for oneof in message.oneof_decl].index(words[1])
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                full_name = _resolve(schema, path, kind)
                is_enum = isinstance(schema[full_name], dict)
                field.type = _Field.TYPE_ENUM if is_enum else _Field.TYPE_MESSAGE
                field.type_name = f'.{package}.{full_name}'
    return file


def _resolve(schema: Schema, scope: str, name: str) -> str:
    """The entry `name` means inside message `scope`: its own nested types first, then outwards."""
    while True:
        candidate = f'{scope}.{name}' if scope else name
        if candidate in schema:
            return candidate
        if not scope:
            raise KeyError(f'schema: no type {name}')
        scope = scope.rpartition('.')[0]


_RR, _TYPES = 'io.statefun.sdk.reqreply', 'io.statefun.sdk.types'
# A pool of our own: these descriptors never clash with a StateFun SDK loaded in the same process.
_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file('statefun_lite/request_reply.proto', _RR, _REQUEST_REPLY))
_pool.Add(_file('statefun_lite/types.proto', _TYPES, _WRAPPERS))


def _class(full_name: str) -> Any:
    descriptor = _pool.FindMessageTypeByName(full_name)
    get_class = getattr(message_factory, 'GetMessageClass', None)  # protobuf 4.22 and later
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(_pool).GetPrototype(descriptor)


_Address, _TypedValue = _class(f'{_RR}.Address'), _class(f'{_RR}.TypedValue')
_ToFunction, _FromFunction = _class(f'{_RR}.ToFunction'), _class(f'{_RR}.FromFunction')
_DELETE, _MODIFY = 0, 1
_AFTER_WRITE, _AFTER_INVOKE = 1, 2

# ---- types: a typename, and how its values become bytes and back --------------------------------


class Type(Generic[T]):
    """A value type as the runtime sees it: a typename naming opaque bytes, and their codec."""

    def __init__(self, typename: str, serialize: Callable[[T], bytes],
                 deserialize: Callable[[bytes], T]) -> None:
        self.typename, self.serialize, self.deserialize = typename, serialize, deserialize

    def __repr__(self) -> str:
        return f'Type({self.typename!r})'


def _wrapper_type(name: str, wrapper: str) -> Type[Any]:
    cls = _class(f'{_TYPES}.{wrapper}')

    def serialize(value: Any) -> bytes:
        data: bytes = cls(value=value).SerializeToString()
        return data

    def deserialize(data: bytes) -> Any:
        return cls.FromString(data).value

    return Type(f'io.statefun.types/{name}', serialize, deserialize)


IntType: Type[int] = _wrapper_type('int', 'IntWrapper')
LongType: Type[int] = _wrapper_type('long', 'LongWrapper')
StringType: Type[str] = _wrapper_type('string', 'StringWrapper')
BoolType: Type[bool] = _wrapper_type('bool', 'BooleanWrapper')
FloatType: Type[float] = _wrapper_type('float', 'FloatWrapper')
DoubleType: Type[float] = _wrapper_type('double', 'DoubleWrapper')


def json_type(typename: str) -> Type[Any]:
    """Values as UTF-8 JSON under a typename of your choosing (namespace/name)."""
    _split(typename)
    return Type(typename, lambda value: json.dumps(value, separators=(',', ':')).encode('utf-8'),
                lambda data: json.loads(data.decode('utf-8')))


def _split(typename: str) -> tuple[str, str]:
    """namespace/name into its parts. One slash only: runtimes split a second one differently."""
    namespace, slash, name = typename.partition('/')
    if not namespace or not slash or not name or '/' in name:
        raise ValueError(f'{typename!r} is not a typename: expected namespace/name')
    return namespace, name


# ---- what a function declares and sees ----------------------------------------------------------


@dataclass(frozen=True)
class ValueSpec:
    """A persisted value of a function: the runtime keeps it and sends it with every request.

    At most one expiry: `expire_after_write_ms` (since the value was last written) or
    `expire_after_call_ms` (since the function was last invoked for that address).
    """

    name: str
    type: Type[Any]
    expire_after_write_ms: Optional[int] = None
    expire_after_call_ms: Optional[int] = None

    def __post_init__(self) -> None:
        # Values are attributes of `context.storage`, so a name must be usable as one.
        if not self.name.isidentifier() or self.name.startswith('_'):
            raise ValueError(f'value name {self.name!r}: use an identifier not starting with _')
        if self.expire_after_write_ms is not None and self.expire_after_call_ms is not None:
            raise ValueError(f'value {self.name}: expire after write or after call, not both')
        if any(ms is not None and ms <= 0
               for ms in (self.expire_after_write_ms, self.expire_after_call_ms)):
            raise ValueError(f'value {self.name}: an expiry is a positive number of milliseconds')


class Address(NamedTuple):
    """A function instance: its typename (namespace/type) and id. str() gives namespace/type/id."""

    namespace: str
    type: str
    id: str

    @property
    def typename(self) -> str:
        return f'{self.namespace}/{self.type}'

    def __str__(self) -> str:
        return f'{self.typename}/{self.id}'


class Message:
    """An incoming message: a typename and bytes (None: no value), decoded with a matching type."""

    def __init__(self, typename: str, raw: Optional[bytes]) -> None:
        self.typename, self.raw = typename, raw

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
        """The value parsed as JSON, whatever its typename: JSON types are named by their users."""
        if self.raw is None:
            raise ValueError(f'message of type {self.typename} carries no value')
        return json.loads(self.raw.decode('utf-8'))

    def __repr__(self) -> str:
        return f'Message({self.typename!r}, {self.raw!r})'


class _Cell:
    """One declared value during a batch: its typename and bytes now, and whether they changed."""

    __slots__ = ('spec', 'typename', 'raw', 'changed')

    def __init__(self, spec: ValueSpec, typename: str, raw: Optional[bytes]) -> None:
        self.spec, self.typename, self.raw, self.changed = spec, typename, raw, False


class Storage:
    """The declared values as attributes: read them, assign them, `del` (or assign None) to delete.

    A read decodes the current bytes each time, so it shows what would be persisted: a JSON value
    changed in place is not stored until it is assigned back.
    """

    def __init__(self, cells: dict[str, _Cell]) -> None:
        object.__setattr__(self, '_cells', cells)

    def _cell(self, name: str) -> _Cell:
        cells: dict[str, _Cell] = object.__getattribute__(self, '_cells')
        if name not in cells:
            raise AttributeError(f'no value {name!r} is declared (declared: {", ".join(cells)})')
        return cells[name]

    def __getattr__(self, name: str) -> Any:
        cell = self._cell(name)
        if cell.raw is None:
            return None
        if cell.typename != cell.spec.type.typename:
            # Bytes of another type (the spec changed since they were written) would decode badly.
            raise TypeError(f'value {name} is stored as {cell.typename}, '
                            f'declared as {cell.spec.type.typename}')
        return cell.spec.type.deserialize(cell.raw)

    def __setattr__(self, name: str, value: Any) -> None:
        cell = self._cell(name)
        cell.raw = None if value is None else cell.spec.type.serialize(value)  # fails at the write
        cell.typename, cell.changed = cell.spec.type.typename, True

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)


def _typed(value: Any, type: Type[Any]) -> Any:
    return _TypedValue(typename=type.typename, has_value=True, value=type.serialize(value))


def _target(typename: str, id: str) -> Any:
    namespace, name = _split(typename)
    return _Address(namespace=namespace, type=name, id=id)


class Context:
    """What one invocation sees: its address, its caller (None if not a function), its storage,
    and the ways to send. Everything sent is answered in the order it was sent."""

    def __init__(self, address: Address, caller: Optional[Address], storage: Storage,
                 response: Any) -> None:
        self.address, self.caller, self.storage = address, caller, storage
        self._response = response  # the batch's InvocationResponse, which collects the effects

    def send(self, typename: str, id: str, value: Any, type: Type[Any]) -> None:
        """Sends `value` to the function `typename` (namespace/type) with id `id`."""
        self._response.outgoing_messages.add(target=_target(typename, id),
                                             argument=_typed(value, type))

    def send_after(self, delay_ms: int, typename: str, id: str, value: Any, type: Type[Any],
                   cancellation_token: Optional[str] = None) -> None:
        """Like send, delivered after `delay_ms`; a token lets cancel_delayed_message undo it."""
        if not isinstance(delay_ms, int) or delay_ms < 0:
            raise ValueError(f'delay_ms must be a whole number of milliseconds >= 0: {delay_ms!r}')
        delayed = self._response.delayed_invocations.add(
            delay_in_ms=delay_ms, target=_target(typename, id), argument=_typed(value, type))
        if cancellation_token:
            delayed.cancellation_token = cancellation_token

    def cancel_delayed_message(self, token: str) -> None:
        if not token:
            raise ValueError('a cancellation token is a non-empty string')
        self._response.delayed_invocations.add(is_cancellation_request=True,
                                               cancellation_token=token)

    def send_egress(self, namespace_slash_type: str, value: Any, type: Type[Any]) -> None:
        """Sends `value` to the egress namespace/type."""
        namespace, name = _split(namespace_slash_type)
        self._response.outgoing_egresses.add(egress_namespace=namespace, egress_type=name,
                                             argument=_typed(value, type))


# ---- the registry: a ToFunction request in, a FromFunction answer out ---------------------------

Handler = Callable[[Context, Message], None]
H = TypeVar('H', bound=Handler)


class RequestError(Exception):
    """A request answered with an error: `status` is the HTTP status, the message its text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad_request(why: str) -> RequestError:
    return RequestError(400, f'not a valid ToFunction request: {why}')


def _address(message: Any, where: str) -> Address:
    if not message.namespace or not message.type:
        raise _bad_request(f'{where} has no address (namespace and type)')
    return Address(message.namespace, message.type, message.id)


def _value(typed: Any) -> Optional[bytes]:
    # has_value with empty bytes is a real value: IntWrapper(0) serializes to nothing at all.
    return typed.value if typed.has_value or typed.value else None


def _incomplete(missing: Sequence[ValueSpec]) -> bytes:
    """Asks the runtime to register these values and send the batch again; nothing has run."""
    answer = _FromFunction()
    for spec in missing:
        value = answer.incomplete_invocation_context.missing_values.add(
            state_name=spec.name, type_typename=spec.type.typename)
        expiry = value.expiration_spec
        expiry.SetInParent()  # sent even for "never" (mode NONE)
        if spec.expire_after_write_ms is not None:
            expiry.mode, expiry.expire_after_millis = _AFTER_WRITE, spec.expire_after_write_ms
        elif spec.expire_after_call_ms is not None:
            expiry.mode, expiry.expire_after_millis = _AFTER_INVOKE, spec.expire_after_call_ms
    data: bytes = answer.SerializeToString()
    return data


class Functions:
    """The functions a process serves, by typename (namespace/type)."""

    def __init__(self) -> None:
        self._bound: dict[str, tuple[Handler, tuple[ValueSpec, ...]]] = {}

    def bind(self, typename: str, specs: Sequence[ValueSpec] = ()) -> Callable[[H], H]:
        """Decorator: @functions.bind(typename='namespace/type', specs=[ValueSpec(...), ...])."""
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
            raise ValueError(f'function {typename} declares a value twice: {names}')
        self._bound[typename] = (handler, tuple(specs))

    def handle(self, body: bytes) -> bytes:
        """A serialized ToFunction in, a serialized FromFunction out; or a RequestError.

        The handler runs once per invocation of the batch, in order, all sharing one storage, so
        each sees the writes of those before it. A handler's exception fails the whole batch.
        """
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
        messages: list[tuple[Optional[Address], Message]] = []
        for index, invocation in enumerate(batch.invocations):
            if not invocation.HasField('argument'):
                raise _bad_request(f'invocation {index} has no argument')
            caller = (_address(invocation.caller, f'the caller of invocation {index}')
                      if invocation.HasField('caller') else None)
            messages.append((caller, Message(invocation.argument.typename,
                                             _value(invocation.argument))))

        if target.typename not in self._bound:
            raise RequestError(404, f'no function {target.typename} here '
                                    f'(served: {", ".join(self._bound)})')
        handler, specs = self._bound[target.typename]
        state = {value.state_name: value.state_value for value in batch.state}
        missing = [spec for spec in specs if spec.name not in state]
        if missing:
            return _incomplete(missing)

        cells = {spec.name: _Cell(spec, state[spec.name].typename, _value(state[spec.name]))
                 for spec in specs}
        storage = Storage(cells)
        answer = _FromFunction()
        response = answer.invocation_result
        response.SetInParent()  # a result with no effects is still a result
        for caller, message in messages:
            try:
                handler(Context(target, caller, storage, response), message)
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                raise RequestError(500, f'{target.typename} failed: '
                                        f'{type(error).__name__}: {error}') from error
        for cell in cells.values():
            if not cell.changed:
                continue
            if cell.raw is None:
                response.state_mutations.add(mutation_type=_DELETE, state_name=cell.spec.name)
            else:
                value = _TypedValue(typename=cell.typename, has_value=True, value=cell.raw)
                response.state_mutations.add(mutation_type=_MODIFY, state_name=cell.spec.name,
                                             state_value=value)
        data: bytes = answer.SerializeToString()
        return data


# ---- HTTP ---------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """POST (any path) a ToFunction; keep-alive, so every answer carries its Content-Length."""

    protocol_version = 'HTTP/1.1'
    server_version = 'statefun-lite'
    timeout = 300  # seconds an idle keep-alive connection may hold its thread
    functions: Functions

    def do_POST(self) -> None:
        try:
            payload, status = self.functions.handle(self._read_body()), 200
            content_type = 'application/octet-stream'
        except RequestError as error:
            payload, status = str(error).encode('utf-8'), error.status
            content_type = 'text/plain; charset=utf-8'
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(payload)))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = self.headers.get('Content-Length', '')
        if not length.isdigit():
            self.close_connection = True  # without a length, the next request cannot be found
            raise RequestError(411, 'a request needs a Content-Length')
        body: bytes = self.rfile.read(int(length))
        if len(body) < int(length):
            self.close_connection = True
            raise RequestError(400, 'the request body ended early')
        return body

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: stdout has only the "listening on" line, stderr only failures


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _remove_stale_socket(path: str) -> None:
    """Removes a socket file a dead server left behind; one still answering is left alone."""
    if not os.path.exists(path) or not stat.S_ISSOCK(os.stat(path).st_mode):
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
    raise OSError(f'{path} is in use by a running server')


class _Stop(BaseException):
    """SIGTERM, raised in the main thread to leave serve_forever at once, not at its next poll."""


def _stop(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during cleanup just ends it
    raise _Stop


def serve(functions: Functions, host: str = '127.0.0.1', port: int = 0,
          unix_socket: Optional[str] = None) -> None:
    """Serves `functions` until SIGTERM or Ctrl-C. Port 0 lets the OS choose one.

    Once listening, prints one line to stdout, `listening on http://127.0.0.1:8000/` (or
    `listening on http+unix:///path/to.sock/`), so whoever started the process can read it.
    """
    handler = type('Handler', (_Handler,), {'functions': functions})
    server: socketserver.BaseServer
    if unix_socket is not None:
        _remove_stale_socket(unix_socket)
        server = _UnixHTTPServer(unix_socket, handler)
        url = f'http+unix://{unix_socket}/'
    else:
        server = ThreadingHTTPServer((host, port), handler)
        url = f'http://{host}:{server.server_address[1]}/'
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
