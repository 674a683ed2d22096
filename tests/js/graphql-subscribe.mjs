// One GraphQL subscription over graphql-transport-ws, with the `graphql-ws` npm client (not ours), for
// Herald's integration tests. Usage: node graphql-subscribe.mjs URL TOKEN QUERY [VARIABLES_JSON]
// (TOKEN "" for none). Prints one JSON line per event: {"connected":true}, {"next":…}, {"error":…},
// {"complete":true}, {"closed":{"code","reason"}}. Exits when its stdin closes.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, query, variables] = process.argv.slice(2);
const print = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const described = (e) => (e instanceof Error ? e.message : e && e.code ? { code: e.code, reason: e.reason } : e);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: token ? { token } : {},
  retryAttempts: 0,
  lazy: false,
  onNonLazyError: (e) => print({ error: described(e) }),
  on: {
    connected: () => print({ connected: true }),
    closed: (e) => print({ closed: { code: e.code, reason: e.reason } }),
  },
});

client.subscribe(
  { query, variables: JSON.parse(variables || '{}') },
  {
    next: (value) => print({ next: value }),
    error: (e) => print({ error: described(e) }),
    complete: () => print({ complete: true }),
  },
);

process.stdin.resume();
process.stdin.on('end', async () => {
  await client.dispose();
  process.exit(0);
});
