"""py/pong: a remote function in Python, served over StateFun's HTTP request-reply protocol.

Every int n it receives counts as a hit and is reported to the egress example/pongs; when the
sender was a function and n > 0, it is answered with n - 1, so a ping function and this one volley
until 0.

    /usr/bin/python3 examples/python/pong.py --port 8000
"""

from __future__ import annotations

import argparse

from statefun_lite import (Context, Functions, IntType, Message, StringType, ValueSpec, json_type,
                           serve)

functions = Functions()
PongReport = json_type('example/pong-report')


@functions.bind(typename='py/pong', specs=[
    ValueSpec('hits', IntType),
    # Forgotten a minute after it was last written, to show expiry: the runtime drops it, not us.
    ValueSpec('last_caller', StringType, expire_after_write_ms=60_000),
])
def pong(context: Context, message: Message) -> None:
    n = message.as_int()
    storage = context.storage
    storage.hits = (storage.hits or 0) + 1
    caller = context.caller
    if caller is not None:
        storage.last_caller = str(caller)  # namespace/type/id
    report = {'id': context.address.id, 'hits': storage.hits, 'n': n}
    context.send_egress('example/pongs', report, PongReport)
    if caller is not None and n > 0:
        context.send(caller.typename, caller.id, n - 1, IntType)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--port', type=int, default=8000,
                       help='TCP port on --host (default 8000; 0: any free port)')
    where.add_argument('--unix-socket', metavar='PATH',
                       help='serve on a unix socket instead (name it *.sock)')
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1)')
    arguments = parser.parse_args()
    serve(functions, host=arguments.host, port=arguments.port, unix_socket=arguments.unix_socket)


if __name__ == '__main__':
    main()
