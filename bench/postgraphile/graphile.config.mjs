// PostGraphile 5 preset for the scale benchmark (bench/scale): the same database, the same
// login role (authenticator) and the same per-request security as the order API.
//
// Environment (set by the benchmark):
//   PGHOST      the PostgreSQL socket directory (or a host name)
//   PGPORT      optional
//   PGDATABASE  database name (default postgres)
//   PGUSER      login role (default authenticator)
//   PGPASSWORD  optional
//   PG_POOL_MAX pool size (default 10, the API's DB_POOL_SIZE default); idle connections are kept
//   JWT_SECRET, JWT_AUDIENCE (default "authenticated"), JWT_LEEWAY_SECONDS (default 30)
//
// Every request: verify the bearer token (HS256, same secret and audience as the API);
// then PostGraphile runs the operation in a transaction with
//   set_config('role', claims.role, true), set_config('request.jwt.claims', <claims json>, true)
// so the same row level security policies (auth.uid() from request.jwt.claims) apply.
// No token: role anon, as in the API.
import jwt from "jsonwebtoken";
import { makePgService } from "postgraphile/adaptors/pg";
import { SafeError } from "postgraphile/grafast";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const APP_ROLES = new Set(["anon", "authenticated", "service_role", "compliance_auditor"]);
const secret = process.env.JWT_SECRET;
if (!secret) throw new Error("JWT_SECRET is not set");
const audience = process.env.JWT_AUDIENCE || "authenticated";
const clockTolerance = Number(process.env.JWT_LEEWAY_SECONDS || 30);

// Thrown from the context callback: grafserv answers with the error's statusCode.
function unauthorized(message) {
  return Object.assign(new SafeError(message, { statusCode: 401 }), { statusCode: 401 });
}

function claimsFrom(authorization) {
  if (authorization === undefined || authorization.trim() === "") {
    return { role: "anon" };
  }
  const parts = authorization.trim().split(/\s+/);
  if (parts.length !== 2 || parts[0].toLowerCase() !== "bearer") {
    throw unauthorized("malformed authorization header");
  }
  let claims;
  try {
    claims = jwt.verify(parts[1], secret, { algorithms: ["HS256"], audience, clockTolerance });
  } catch {
    throw unauthorized("invalid token");
  }
  if (typeof claims !== "object" || claims === null || !APP_ROLES.has(claims.role)) {
    throw unauthorized("invalid token");
  }
  if (claims.role === "authenticated" && typeof claims.sub !== "string") {
    throw unauthorized("invalid token");
  }
  return claims;
}

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      // node-postgres reads PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD; a directory in PGHOST
      // is a Unix socket directory.
      poolConfig: {
        host: process.env.PGHOST,
        port: process.env.PGPORT ? Number(process.env.PGPORT) : undefined,
        database: process.env.PGDATABASE || "postgres",
        user: process.env.PGUSER || "authenticator",
        password: process.env.PGPASSWORD || undefined,
        max: Number(process.env.PG_POOL_MAX || 10),
        // Keep idle connections (node-postgres closes them after 10s by default), as the API's
        // pool does: the benchmark leaves each server idle while it measures the others.
        idleTimeoutMillis: 0,
      },
      schemas: ["public"],
    }),
  ],
  grafserv: {
    graphqlPath: "/graphql",
    graphiql: false,
    watch: false,
    maxRequestLength: 100_000,
  },
  grafast: {
    explain: false,
    context(requestContext) {
      const authorization = requestContext.node?.req?.headers?.authorization;
      const claims = claimsFrom(authorization);
      return {
        pgSettings: {
          role: claims.role,
          "request.jwt.claims": JSON.stringify(claims),
        },
      };
    },
  },
};

export default preset;
