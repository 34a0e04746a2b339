// The comparison server for load_tests/fanout.py: Node's `ws` relaying every message received
// on /control to every other connected client, the way a `ws` broadcast is usually written.
// usage: node ws_relay.mjs <port>
import { WebSocketServer, WebSocket } from "ws";

const port = Number(process.argv[2] || 8090);
const wss = new WebSocketServer({ port, host: "127.0.0.1", perMessageDeflate: false });

wss.on("connection", (socket, request) => {
  if (request.url === "/control") {
    socket.on("message", (data, isBinary) => {
      for (const client of wss.clients) {
        if (client !== socket && client.readyState === WebSocket.OPEN) {
          client.send(data, { binary: isBinary });
        }
      }
    });
  }
  // viewers' commands (connect, subscribe, pongs) are ignored: the relay only fans out
});

process.on("SIGTERM", () => wss.close(() => process.exit(0)));
