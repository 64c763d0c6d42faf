#!/bin/sh
# Call an API with a token from tokend; if the server rejects the token (401), tell tokend and
# retry once with the new token.
#
#   examples/shell/call-api.sh minut https://api.minut.com/v8/users/me
set -eu
profile=$1
url=$2

token=$(tokenctl token "$profile")
status=$(curl -sS -o /tmp/call-api.$$ -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
if [ "$status" = 401 ]; then
  # The rejected token goes on stdin, never on a command line.
  token=$(printf %s "$token" | tokenctl invalidate "$profile" --token-stdin)
  status=$(curl -sS -o /tmp/call-api.$$ -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
fi
cat /tmp/call-api.$$
rm -f /tmp/call-api.$$
[ "$status" -lt 400 ]
