"""One HTTP request over a Unix socket with Python's standard library (http.client), for
tokend's end-to-end tests: client.py SOCKET METHOD TARGET [BODY_FILE]. Prints the answer as
JSON: status, Tokend-Error header, body."""

import http.client
import json
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("tokend", timeout=120)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def main(path, method, target, body_file=None):
    body = open(body_file, "rb").read() if body_file else None
    conn = UnixConnection(path)
    conn.request(method, target, body=body)
    answer = conn.getresponse()
    data = answer.read()
    print(json.dumps({
        "status": answer.status,
        "tokend_error": answer.getheader("Tokend-Error"),
        "body": data.decode("utf-8", "replace"),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
