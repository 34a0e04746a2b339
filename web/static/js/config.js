// Where the hub is: asked of the server (`GET /api/config`), so pages never guess ports.

import { api } from "./api.js";

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1", "0.0.0.0"]);

let cached = null;

export async function config() {
  if (!cached) cached = api.config();
  try {
    return await cached;
  } catch (err) {
    cached = null;
    throw err;
  }
}

// The configured hub URL, unless it names a loopback address while this page was opened through
// another name (a phone on the LAN): then the hub is on the page's host, at the hub's port.
export function resolveHubUrl(configured, hubPort, pageLocation) {
  const url = new URL(configured);
  if (LOOPBACK.has(url.hostname) && !LOOPBACK.has(pageLocation.hostname)) {
    url.hostname = pageLocation.hostname;
    url.port = String(hubPort);
  }
  if (pageLocation.protocol === "https:" && url.protocol === "ws:") url.protocol = "wss:";
  return url.toString();
}
