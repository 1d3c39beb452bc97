"""An HTTP server on the listening socket the agent holds (`listen`): it takes fd 3 as it
comes (sd_listen_fds: LISTEN_FDS, LISTEN_PID), never binds, and on SIGTERM finishes the
requests it has accepted and leaves the others queued on the socket for its siblings.

    [process.web]
    command = ["python3", "-u", "listen_http.py"]
    instances = 2
    listen = ["tcp://127.0.0.1:8080"]
    ready = { log = "serving" }

Try: curl http://127.0.0.1:8080/
"""
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading

LISTEN_FDS_START = 3

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("no listening socket: run me with `listen` in procctl.toml")

name = f'{os.environ.get("PROCCTL_NAME")}:{os.environ.get("PROCCTL_INSTANCE")}'
listening = socket.socket(fileno=LISTEN_FDS_START)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"{name} pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    # Requests accepted before a stop are answered before the process exits.
    block_on_close = True


server = Server(listening.getsockname(), Handler, bind_and_activate=False)
server.socket.close()
server.socket = listening

# serve_forever stops between two accepts; what is still queued stays on the shared socket.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"{name} serving on fd {LISTEN_FDS_START} (pid {os.getpid()})", flush=True)
server.serve_forever(poll_interval=0.05)
# Only our copy of the socket: the agent and the siblings keep theirs.
server.server_close()
print(f"{name} stopped", flush=True)
