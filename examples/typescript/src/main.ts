// The Python example's walk, from TypeScript: log in with a token, page the orders, submit a
// MARKET order with a clientOrderId, follow it until FILLED. Exit status 1 on any failure.
//
//   ORDER_API_TOKEN=... npm start [-- http://127.0.0.1:8000/graphql]
import { randomUUID } from "node:crypto";

import type { CombinedError, OperationResult } from "@urql/core";
import WebSocket from "ws";

import { createOrderApiClient } from "./client.js";
import type { OrdersQuery } from "./gql/graphql.js";
import { graphql } from "./gql/index.js";

const Viewer = graphql(`
  query Viewer {
    viewer { traderId role }
  }
`);

const Orders = graphql(`
  query Orders($first: Int!, $after: String) {
    orders(first: $first, after: $after) {
      edges { node { id symbol side quantity status } }
      pageInfo { hasNextPage endCursor }
    }
  }
`);

const Submit = graphql(`
  mutation Submit($input: SubmitOrderInput!) {
    submitOrder(input: $input) { id clientOrderId status }
  }
`);

// snapshot: true starts with the order's current state: subscribing after the submit cannot
// miss a fill that happened in between.
const Updates = graphql(`
  subscription Updates($id: UUID!) {
    orderUpdates(orderId: $id, snapshot: true) { id status filledQuantity averageFillPrice }
  }
`);

const FINAL = new Set(["FILLED", "REJECTED", "CANCELLED", "EXPIRED", "REPLACED"]);

function describe(error: CombinedError): string {
  const [first] = error.graphQLErrors;
  if (first === undefined) return error.message; // a network error: no GraphQL error to read
  const field = first.extensions.field === undefined ? "" : ` [${String(first.extensions.field)}]`;
  return `${String(first.extensions.code)}${field}: ${first.message}`;
}

function dataOf<T>(result: OperationResult<T>): T {
  if (result.error !== undefined) throw new Error(describe(result.error));
  if (result.data === undefined) throw new Error("no data in the answer");
  return result.data;
}

async function main(): Promise<void> {
  const url = process.argv[2] ?? "http://127.0.0.1:8000/graphql";
  const token = process.env.ORDER_API_TOKEN?.trim();
  if (!token) throw new Error("set ORDER_API_TOKEN to a token (python -m app dev prints one)");
  const { client, ws } = createOrderApiClient({ url, token, webSocketImpl: WebSocket });
  try {
    const { viewer } = dataOf(await client.query(Viewer, {}).toPromise());
    if (viewer.role === "anon") throw new Error("the token was not sent");
    console.log(`logged in: trader ${viewer.traderId}, role ${viewer.role}`);

    let after: string | null | undefined = null;
    for (let page = 1; page <= 3; page++) {
      // The generated type of the Orders query's answer, annotated where inference goes round
      // in a circle (after comes from the previous page's answer).
      const answer = await client.query(Orders, { first: 2, after }).toPromise();
      const { orders }: OrdersQuery = dataOf(answer);
      for (const { node } of orders.edges) {
        const { id, side, quantity, symbol, status } = node;
        console.log(`  page ${page}: ${id} ${side} ${quantity} ${symbol} ${status}`);
      }
      if (!orders.pageInfo.hasNextPage) break;
      after = orders.pageInfo.endCursor;
    }

    // The clientOrderId makes the submit idempotent: a retry after a lost answer returns the
    // order already written instead of buying twice.
    const input = {
      symbol: "AAPL",
      side: "BUY",
      quantity: 10,
      orderType: "MARKET",
      clientOrderId: `example-${randomUUID()}`,
    } as const;
    const { submitOrder } = dataOf(await client.mutation(Submit, { input }).toPromise());
    const { id, clientOrderId, status } = submitOrder;
    console.log(`submitted: ${id} clientOrderId=${clientOrderId} ${status}`);

    await new Promise<void>((resolve, reject) => {
      const { unsubscribe } = client.subscription(Updates, { id }).subscribe((result) => {
        if (result.error !== undefined) {
          // UPDATES_MISSED: the stream stays open and the order's current state follows.
          if (result.error.graphQLErrors[0]?.extensions.reason === "UPDATES_MISSED") return;
          unsubscribe();
          reject(new Error(describe(result.error)));
          return;
        }
        const order = result.data?.orderUpdates;
        if (order === undefined) return;
        console.log(`  update: ${order.status}, filled ${order.filledQuantity}`);
        if (!FINAL.has(order.status)) return;
        unsubscribe();
        if (order.status === "FILLED") {
          console.log(`FILLED: ${order.filledQuantity} at ${order.averageFillPrice}`);
          resolve();
        } else {
          reject(new Error(`order ${order.id} ended ${order.status}, not FILLED`));
        }
      });
    });
  } finally {
    await ws.dispose();
  }
}

const timeout = setTimeout(() => {
  console.error("error: not done within 30 s");
  process.exit(1);
}, 30_000);

main()
  .then(() => clearTimeout(timeout))
  .catch((error: unknown) => {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
