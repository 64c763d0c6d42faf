#!/bin/sh
# Call an API with `tokenctl exec`: the command exits 77 when the server rejects the token (401),
# and tokenctl then reports that token to tokend and runs the command once more with a new one.
#
#   examples/shell/exec-call-api.sh minut https://api.minut.com/v8/users/me
set -eu
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export URL="$2" OUT="$out"
tokenctl exec "$1" --retry-on-exit 77 -- sh -c '
  status=$(curl -sS -o "$OUT" -w "%{http_code}" -H "Authorization: Bearer $TOKEN" "$URL")
  [ "$status" = 401 ] && exit 77
  cat "$OUT"
  [ "$status" -lt 400 ]'
