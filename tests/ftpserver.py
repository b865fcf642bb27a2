"""A real FTP server on 127.0.0.1 (pyftpdlib), serving a folder: the ``--storage ftp://`` of the tests.

fsspec's ``ftp://`` filesystem uses the standard library's ftplib, so the store's URI path is exercised through a
real network protocol without a cloud account: listing, uploads, renames and deletes go over a socket to another
process (or thread), as they would to s3:// or gs://. In the tests' own network namespace for the Ray cluster
(``python tests/ftpserver.py ROOT LOG``), in a thread for the store's unit tests (:func:`serve`).
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

USER, PASSWORD = "ablate", "not-a-secret"


def _server(root: Path):
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    auth = DummyAuthorizer()
    auth.add_user(USER, PASSWORD, str(root), perm="elradfmwMT")  # read, list, write, rename, delete, mkdir
    handler = type("Handler", (FTPHandler,), {"authorizer": auth, "banner": "mhsa-patch tests", "log_prefix": ""})
    server = FTPServer(("127.0.0.1", 0), handler)  # a free port
    return server, server.socket.getsockname()[1]


def uri(port: int, path: str = "") -> str:
    return f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/{path}"


class serve:
    """``with serve(root) as port``: an FTP server for ``root`` in a thread of this process, stopped at the end;
    ``commands``: the server's log of what it was asked, one line per command."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __enter__(self) -> int:
        # the server's log of commands (``STOR /x completed=1 ...``, ``RNTO /y 250``) collected, not printed; a handler
        # of its own also keeps pyftpdlib from configuring logging itself
        self.commands: list[str] = []
        self.log = logging.getLogger("pyftpdlib")
        self.handler = _Collect(self.commands)
        self.log.addHandler(self.handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self.root.mkdir(parents=True, exist_ok=True)
        self.server, port = _server(self.root)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
        self.thread.start()
        return port

    def __exit__(self, *exc) -> None:
        self.server.close_all()
        self.thread.join(timeout=10)
        self.log.removeHandler(self.handler)


def writes(commands: list[str], n: int, timeout: float = 10) -> list[str]:
    """The first ``n`` writing commands of a server's log, as ``"STOR name"`` (the last part of the path), waited for:
    the server logs a command once it has answered it, so the last line may come a moment after the client moved on."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        out: list[str] = []
        for c in list(commands):
            line = f"{c.split()[0]} {c.split()[1].rsplit('/', 1)[-1]}"
            # fsspec uploads a file in parts (STOR with a restart offset): one STOR per file here
            if c.split()[0] in ("STOR", "RNFR", "RNTO", "DELE", "MKD", "RMD") and out[-1:] != [line]:
                out.append(line)
        if len(out) >= n or time.monotonic() > deadline:
            return out
        time.sleep(0.01)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__()
        self.into = into

    def emit(self, record) -> None:
        self.into.append(record.getMessage().strip())


if __name__ == "__main__":  # python tests/ftpserver.py ROOT LOG: serve ROOT, its commands logged to LOG, the port
    # printed, until killed
    root, log = Path(sys.argv[1]), sys.argv[2]
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("pyftpdlib").addHandler(handler)
    logging.getLogger("pyftpdlib").setLevel(logging.INFO)
    root.mkdir(parents=True, exist_ok=True)
    srv, p = _server(root)
    print(p, flush=True)
    srv.serve_forever()
