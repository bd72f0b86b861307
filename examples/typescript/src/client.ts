// An urql client for the Order API: queries and mutations over HTTP, subscriptions over
// graphql-ws. Copy this file into a frontend as it is; main.ts shows it in use.
import { Client, cacheExchange, fetchExchange, subscriptionExchange } from "@urql/core";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";

export interface OrderApiOptions {
  /** http(s)://host:port/graphql; subscriptions use the same URL with ws(s). */
  url: string;
  /** A bearer token: `python -m app dev` prints one for a seed trader. */
  token: string;
  /** A WebSocket class where there is no global one (Node before 22: the `ws` package). */
  webSocketImpl?: unknown;
}

export function createOrderApiClient({ url, token, webSocketImpl }: OrderApiOptions): {
  client: Client;
  ws: WsClient;
} {
  const authorization = `Bearer ${token}`;
  const ws = createWsClient({
    url: url.replace(/^http/, "ws"),
    // Browsers cannot set headers on a WebSocket, so the token travels in the payload of
    // graphql-transport-ws's connection_init; the server verifies it as it does the header.
    connectionParams: { Authorization: authorization },
    webSocketImpl,
  });
  const client = new Client({
    url,
    fetchOptions: { headers: { Authorization: authorization } },
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query ?? "" };
          return {
            subscribe(sink) {
              return { unsubscribe: ws.subscribe(input, sink) };
            },
          };
        },
      }),
    ],
  });
  return { client, ws };
}
