// A payrelay callback receiver in Node, as the README's "Callbacks" section shows it:
// verify with the official `standardwebhooks` library (the raw body, the three
// webhook-* headers), de-duplicate by webhook-id, answer 2xx fast.
//
//   WEBHOOK_SECRET=whsec_... PORT=8080 node webhook_receiver.mjs
//
// For tests/real_peers.rs it prints {"listening": true, "port": N}, then one JSON line per request: {"verified": id, "type": …}
// or {"rejected": reason}.
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set(); // use your database in production: ids repeat on retries

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    let event;
    try {
      event = webhook.verify(body, req.headers); // throws unless signed and fresh
    } catch (err) {
      console.log(JSON.stringify({ rejected: err.message }));
      res.writeHead(400).end();
      return;
    }
    const id = req.headers['webhook-id'];
    if (!seen.has(id)) {
      seen.add(id);
      // event.type, event.data, event.merchant_id, event.channel: credit the balance here.
      console.log(JSON.stringify({ verified: id, type: event.type, data: event.data }));
    }
    res.writeHead(204).end();
  });
});
// PORT=0: the system picks a free port, printed in the first line.
server.listen(Number(process.env.PORT ?? 8080), '127.0.0.1', () =>
  console.log(JSON.stringify({ listening: true, port: server.address().port })));
