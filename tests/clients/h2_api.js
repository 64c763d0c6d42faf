// An API over TLS that offers HTTP/2 (and HTTP/1.1) by ALPN, for tokend's proxy tests:
// node h2_api.js KEY CERT. Prints the port it listens on (127.0.0.1), then answers every
// request with what it saw: the HTTP version, the path and the Authorization header.
const fs = require("fs");
const http2 = require("http2");

const [key, cert] = process.argv.slice(2).map((path) => fs.readFileSync(path));
const server = http2.createSecureServer({ key, cert, allowHTTP1: true }, (request, response) => {
  response.setHeader("content-type", "application/json");
  response.end(JSON.stringify({
    http_version: request.httpVersion,
    path: request.url,
    authorization: request.headers.authorization ?? null,
  }));
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
