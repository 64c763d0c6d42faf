// oidc-provider, configured as a plain OAuth 2 server for tokend's interop tests.
//
//   PORT=0 REDIRECT_URI=http://127.0.0.1:8976/callback ACCESS_TTL=5 node server.mjs
//
// Prints one JSON line, {"issuer": "http://127.0.0.1:PORT"}, once it listens. Clients:
//   cc-basic / cc-basic-secret   client_credentials, HTTP Basic
//   cc-post  / cc-post-secret    client_credentials, secret in the body
//   web      / web-secret        authorization_code + refresh_token, secret in the body,
//                                redirect URI from REDIRECT_URI
//   tv       (public)            device_code (RFC 8628) + refresh_token, no client secret
// The login and consent pages are oidc-provider's development interactions (any login and
// password are accepted); the device flow's user code pages are oidc-provider's own, at /device. Refresh tokens are issued to clients allowed the refresh_token grant
// and rotated on every use; reusing a rotated-out one revokes the whole grant.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const redirectUri = process.env.REDIRECT_URI || 'http://127.0.0.1:8976/callback';
const accessTtl = Number(process.env.ACCESS_TTL || 3600);

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'cc-basic',
        client_secret: 'cc-basic-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'api:read',
      },
      {
        client_id: 'cc-post',
        client_secret: 'cc-post-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
        scope: 'api:read',
      },
      {
        client_id: 'web',
        client_secret: 'web-secret',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: [redirectUri],
        token_endpoint_auth_method: 'client_secret_post',
      },
      {
        client_id: 'tv',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'none',
      },
    ],
    scopes: ['openid', 'offline_access', 'api:read'],
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true, allowedPolicy: async () => true },
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    pkce: { required: () => true },
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      AuthorizationCode: 60,
      DeviceCode: 10 * 60,
      RefreshToken: 24 * 60 * 60,
      Grant: 24 * 60 * 60,
      Interaction: 10 * 60,
      Session: 60 * 60,
    },
    cookies: { keys: ['tokend-interop-tests-only'] },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});
