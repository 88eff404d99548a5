// Baseline for scripts/bench.d/ws.lua: the same notification stream read by
// Node's `ws` with JSON.parse per message. Usage: node ws_bench.mjs WS_URL SECONDS
import WebSocket from 'ws';

const [url, secsArg] = process.argv.slice(2);
const secs = Number(secsArg || 3);
const ws = new WebSocket(url);
let n = 0, bytes = 0, t0 = 0, n0 = 0, b0 = 0;
ws.on('open', () => {
  ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'accountSubscribe', params: ['NodeBench'] }));
});
ws.on('message', (data) => {
  const msg = JSON.parse(data);
  if (msg.params && msg.params.result) { n++; bytes += data.length; }
  if (n === 20000 && !t0) { // warmed up
    t0 = performance.now(); n0 = n; b0 = bytes;
    setTimeout(() => {
      const ms = performance.now() - t0;
      console.log(`node ws + JSON.parse, same stream: ${Math.round((n - n0) / ms * 1000)} notifications/s ` +
                  `(${((bytes - b0) / ms / 1000).toFixed(0)} MB/s)`);
      process.exit(0);
    }, secs * 1000);
  }
});
ws.on('error', (e) => { console.log(`node ws: ${e.message}`); process.exit(1); });
setTimeout(() => { console.log('node ws: no stream within 10 s'); process.exit(1); }, secs * 1000 + 10000);
