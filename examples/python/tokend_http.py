"""tokend's HTTP API from Python, with the standard library alone.

Let tokend add the token (the profile needs an `api_base`); a 401 is retried by tokend, and
this program never holds the token:

    import tokend_http
    status, body = tokend_http.via_proxy("minut", "GET", "/users/me")

Or ask for the token, call the API yourself, and after a 401 report it and retry once:

    token = tokend_http.token("minut")          # as `tokenctl token minut --format json`
    headers = {"Authorization": "Bearer " + token["access_token"]}
    token = tokend_http.invalidate("minut", token["access_token"])   # after a 401

Run as a script, `python3 tokend_http.py PROFILE proxy PATH` sends GET PATH through the proxy,
and `python3 tokend_http.py PROFILE token URL` calls URL with a token; each prints the body.
"""

import http.client
import json
import os
import socket
import sys
import urllib.error
import urllib.request


def socket_path():
    """$TOKEND_HTTP_SOCKET, else http.sock in tokend's runtime directory."""
    return os.environ.get("TOKEND_HTTP_SOCKET") or os.path.join(
        os.environ["XDG_RUNTIME_DIR"], "tokend", "http.sock"
    )


class TokendConnection(http.client.HTTPConnection):
    """An HTTP connection to tokend's Unix socket."""

    def __init__(self, timeout=130):
        super().__init__("tokend", timeout=timeout)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(socket_path())


class TokendError(Exception):
    """tokend answered with an error; `kind` is its class (login_needed, upstream, …)."""

    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind = status, kind


def _tokend(method, path, body=None):
    connection = TokendConnection()
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    data = json.loads(answer.read())
    if answer.status != 200:
        raise TokendError(answer.status, data["error"], data["message"])
    return data


def token(profile, min_valid=None):
    """The current token of `profile`, with at least `min_valid` (e.g. "5m") left."""
    query = f"?min_valid={min_valid}" if min_valid else ""
    return _tokend("GET", f"/v1/token/{profile}{query}")


def invalidate(profile, rejected_access_token):
    """Tell tokend the API rejected this token; returns a new one."""
    return _tokend("POST", f"/v1/invalidate/{profile}", json.dumps({"token": rejected_access_token}))


def via_proxy(profile, method, path, body=None, headers=None):
    """Sends METHOD api_base/PATH through tokend, which adds the token. Returns the API's
    status and body (tokend's own errors carry a Tokend-Error header)."""
    connection = TokendConnection()
    connection.request(method, f"/v1/proxy/{profile}{path}", body=body, headers=headers or {})
    answer = connection.getresponse()
    return answer.status, answer.read()


def call_api(profile, url):
    """GETs `url` with a token from tokend, reporting it and retrying once after a 401."""
    current = token(profile)
    for attempt in (1, 2):
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + current["access_token"]})
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            if error.code != 401 or attempt == 2:
                raise
            current = invalidate(profile, current["access_token"])


if __name__ == "__main__":
    profile, mode, target = sys.argv[1:4]
    if mode == "proxy":
        status, body = via_proxy(profile, "GET", target)
        if status != 200:
            sys.exit(f"HTTP {status}: {body.decode()}")
    else:
        body = call_api(profile, target)
    print(body.decode())
