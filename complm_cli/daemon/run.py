"""The background server itself (`complm _daemon`, started by connect.py): the pipeline on a Unix socket.

It binds a socket under a name of its own, loads what it needs, and only
then moves the socket to where clients look: a client finds a server that
answers, or none. It then tells the process that started it, through a pipe,
that it is ready; a failure goes to its log instead, which that process reads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys


def run(settings, catalog, place, ready_fd: int | None) -> None:
    from complm_cli.daemon.identity import build_id, options
    from complm_cli.daemon.keeper import Keeper
    from complm_cli.serve import server

    server.require_extra()
    starting = place.folder / f"{place.key}.{os.getpid()}.starting"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # the socket is the user's alone from the start, as is its folder
    try:
        with contextlib.suppress(FileNotFoundError):
            starting.unlink()
        sock.bind(str(starting))
    finally:
        os.umask(mask)
    sock.listen(128)
    try:
        session = server.make_session(settings, catalog)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            starting.unlink()
        raise
    keeper = Keeper(session, keep_alive=settings.keep_alive, idle_exit=settings.idle_exit,
                    options=options(settings, catalog), build=build_id())
    session.warm_up()
    os.replace(starting, place.socket)  # a client that finds the socket from now on is answered
    inode = os.stat(place.socket).st_ino
    print(f"complm server: pid {os.getpid()} listening on {place.socket} (keep_alive {settings.keep_alive:g} s, "
          f"exits after {settings.idle_exit:g} s without a request)", file=sys.stderr, flush=True)
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
    try:
        server.serve(session, sock, keeper=keeper)
    finally:
        try:  # a newer server may have taken the name since: only our own socket is removed
            if os.stat(place.socket).st_ino == inode:
                place.socket.unlink()
        except OSError:
            pass
        print(f"complm server: exiting ({keeper.exit_reason or 'interrupted'})", file=sys.stderr, flush=True)
        session.close(wait=False)
