// One HTTP request over a Unix socket with Node's http module (socketPath), for tokend's
// end-to-end tests: node client.js SOCKET METHOD TARGET [BODY_FILE]. Prints the answer as
// JSON: status, Tokend-Error header, body.
const fs = require("fs");
const http = require("http");

const [socketPath, method, path, bodyFile] = process.argv.slice(2);
const body = bodyFile ? fs.readFileSync(bodyFile) : null;
const request = http.request({ socketPath, method, path, timeout: 120000 }, (answer) => {
  const chunks = [];
  answer.on("data", (chunk) => chunks.push(chunk));
  answer.on("end", () => {
    console.log(JSON.stringify({
      status: answer.statusCode,
      tokend_error: answer.headers["tokend-error"] ?? null,
      body: Buffer.concat(chunks).toString("utf8"),
    }));
  });
});
request.on("error", (e) => { console.error(e.message); process.exit(1); });
if (body) request.setHeader("content-length", body.length);
request.end(body ?? undefined);
