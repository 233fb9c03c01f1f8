"""A small process that forks supervisors on request, so a run starts in about a millisecond.

Starting a fresh Python for every supervisor costs ~50 ms of CPU (interpreter plus imports),
which would dominate both the time from one run's end to the next run's start and the rate
at which short runs go through. The fork server imports the supervisor once; each request
(a SupervisorSpec as JSON, with the supervisor's end of its control socket attached) becomes a
forked child that starts its own session and runs exactly what `python -m runqueue.supervisor`
runs. The server is single-threaded and holds nothing but its socket, so forking it is safe.

Children are reaped by the kernel (SIGCHLD ignored here, reset in each child); the queue
watches them through pidfds and reads their outcome from the run folder. When the queue
closes its end, the server exits; supervisors already started keep running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback

from runqueue.supervisor import EXIT_ERROR, Supervisor
from runqueue.supervisor_spec import SupervisorSpec

MAX_REQUEST_BYTES = 1 << 20


def serve(link: socket.socket) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the queue decides; a terminal's Ctrl-C is not for us
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies: the kernel reaps our children
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(link, MAX_REQUEST_BYTES, 1)
        except OSError:
            return 0
        if not message:
            return 0  # the queue is gone
        control = fds[0] if fds else None
        try:
            spec = SupervisorSpec.from_json(message.decode())
        except (ValueError, TypeError, KeyError) as error:
            link.send(json.dumps({"error": f"bad request: {error}"}).encode())
            if control is not None:
                os.close(control)
            continue
        pid = os.fork()
        if pid == 0:
            os._exit(_child(link, spec, control))
        if control is not None:
            os.close(control)
        link.send(json.dumps({"pid": pid}).encode())


def _child(link: socket.socket, spec: SupervisorSpec, control_fd: int | None) -> int:
    control = None
    try:
        link.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the supervisor waits for its steps itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()  # its own session: survives the queue, its terminal and its Ctrl-C
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(devnull, fd)
        os.close(devnull)
        control = socket.socket(fileno=control_fd) if control_fd is not None else None
        return Supervisor(spec, control).run()
    except BaseException as error:
        if control is not None:
            try:
                reason = traceback.format_exception_only(type(error), error)[-1].strip()
                control.sendall((json.dumps({"status": "error", "message": f"supervisor crashed: {reason}"}) + "\n").encode())
            except OSError:
                pass
        traceback.print_exc()
        return EXIT_ERROR


def main() -> int:
    return serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())
