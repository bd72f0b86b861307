// PostGraphile 5 on node:http, one process, bound to HOST:PORT (default 127.0.0.1:5678).
//   node_modules/.bin/node server.mjs        (Node >= 22; the "node" dependency provides it)
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/node";
import preset from "./graphile.config.mjs";

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 5678);

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
server.keepAliveTimeout = 65_000;
serv.addTo(server).then(
  () => {
    server.listen(port, host, () => {
      console.log(`postgraphile ${process.version} listening on http://${host}:${port}/graphql`);
    });
  },
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

async function shutdown() {
  server.close();
  await pgl.release();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
