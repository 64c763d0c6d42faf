"""Get OAuth tokens from tokend in Python by calling `tokenctl`.

    import tokend_token
    token = tokend_token.get("minut")            # {"access_token": ..., "expires_in": ..., ...}
    headers = {"Authorization": "Bearer " + token["access_token"]}
    # on a 401:
    token = tokend_token.invalidate("minut", token["access_token"])

Run as a script it fetches a URL with the token, retrying once on 401:

    python3 examples/python/tokend_token.py minut https://api.minut.com/v8/users/me
"""

import json
import subprocess
import sys
import urllib.error
import urllib.request


class TokendError(Exception):
    """tokenctl failed; `exit_code` tells why (3: tokend not running, 4: unknown profile,
    5: login needed, 6: the OAuth server failed)."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def _tokenctl(*args, stdin=None):
    done = subprocess.run(
        ["tokenctl", *args, "--json"], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        try:
            message = json.loads(done.stderr)["error"]["message"]
        except (ValueError, KeyError):
            message = done.stderr.strip()
        raise TokendError(message, done.returncode)
    return json.loads(done.stdout)


def get(profile, min_valid=None):
    """The current token of `profile`, with at least `min_valid` (e.g. "5m") left."""
    args = ["token", profile] + (["--min-valid", min_valid] if min_valid else [])
    return _tokenctl(*args)


def invalidate(profile, rejected_access_token):
    """Tell tokend a server rejected this token; returns a new one."""
    return _tokenctl("invalidate", profile, "--token-stdin", stdin=rejected_access_token)


def fetch(profile, url):
    token = get(profile)
    for attempt in (1, 2):
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token["access_token"]})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read().decode()
        except urllib.error.HTTPError as error:
            if error.code != 401 or attempt == 2:
                raise
            token = invalidate(profile, token["access_token"])
    raise AssertionError("unreachable")


if __name__ == "__main__":
    try:
        print(fetch(sys.argv[1], sys.argv[2]))
    except TokendError as error:
        print(f"tokend: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
