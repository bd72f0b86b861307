// PostGraphile 5 in PROCESSES worker processes sharing one port (node:cluster), for
// bench/scale: node cluster.mjs  (PROCESSES=2; each worker runs server.mjs with its own pool).
// SIGTERM/SIGINT to the primary stops every worker.
import cluster from "node:cluster";

const processes = Number(process.env.PROCESSES || 1);

if (cluster.isPrimary && processes > 1) {
  let stopping = false;
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on("exit", (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited (${signal || code}); stopping`);
      stop();
    }
    if (Object.keys(cluster.workers).length === 0) process.exit(stopping ? 0 : 1);
  });
  function stop() {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
  }
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  await import("./server.mjs");
}
