// tokend's HTTP API from Node.js, with its own http module (Node 18 or newer).
//
// Let tokend add the token (the profile needs an api_base); a 401 is retried by tokend, and
// this program never holds the token:
//
//   import { viaProxy } from "./tokend-http.mjs";
//   const { status, body } = await viaProxy("minut", "GET", "/users/me");
//
// Or ask for the token, call the API yourself, and after a 401 report it and retry once:
//
//   let token = await getToken("minut");            // as `tokenctl token minut --format json`
//   token = await invalidate("minut", token.access_token);   // after a 401
//
// Run as a script: `node tokend-http.mjs PROFILE proxy PATH` sends GET PATH through the proxy,
// `node tokend-http.mjs PROFILE token URL` calls URL with a token; each prints the body.
import http from "node:http";
import path from "node:path";

// $TOKEND_HTTP_SOCKET, else http.sock in tokend's runtime directory.
const socketPath =
  process.env.TOKEND_HTTP_SOCKET || path.join(process.env.XDG_RUNTIME_DIR ?? "", "tokend", "http.sock");

/** One request to tokend's socket; resolves to { status, headers, body } (body a Buffer). */
export function tokend(method, target, body) {
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath, method, path: target }, (answer) => {
      const chunks = [];
      answer.on("data", (chunk) => chunks.push(chunk));
      answer.on("end", () => resolve({ status: answer.statusCode, headers: answer.headers, body: Buffer.concat(chunks) }));
    });
    request.on("error", reject);
    request.end(body);
  });
}

async function tokenApi(method, target, body) {
  const answer = await tokend(method, target, body);
  const json = JSON.parse(answer.body);
  if (answer.status !== 200) throw Object.assign(new Error(json.message), { kind: json.error });
  return json;
}

/** The current token of `profile`, with at least `minValid` (e.g. "5m") left. */
export const getToken = (profile, minValid) =>
  tokenApi("GET", `/v1/token/${profile}${minValid ? `?min_valid=${minValid}` : ""}`);

/** Tell tokend the API rejected this token; resolves to a new one. */
export const invalidate = (profile, rejected) =>
  tokenApi("POST", `/v1/invalidate/${profile}`, JSON.stringify({ token: rejected }));

/** METHOD api_base/PATH through tokend, which adds the token. */
export const viaProxy = (profile, method, target, body) => tokend(method, `/v1/proxy/${profile}${target}`, body);

/** GETs `url` with a token from tokend, reporting it and retrying once after a 401. */
export async function callApi(profile, url) {
  let token = await getToken(profile);
  let answer = await fetch(url, { headers: { Authorization: `Bearer ${token.access_token}` } });
  if (answer.status === 401) {
    token = await invalidate(profile, token.access_token);
    answer = await fetch(url, { headers: { Authorization: `Bearer ${token.access_token}` } });
  }
  if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
  return answer.text();
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [profile, mode, target] = process.argv.slice(2);
  if (mode === "proxy") {
    const { status, body } = await viaProxy(profile, "GET", target);
    if (status !== 200) throw new Error(`HTTP ${status}: ${body}`);
    console.log(body.toString());
  } else {
    console.log(await callApi(profile, target));
  }
}
