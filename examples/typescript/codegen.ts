import type { CodegenConfig } from "@graphql-codegen/cli";

// Types for the operations written in src/ with graphql(`...`), from the schema the server
// serves as SDL (GET /graphql/schema.graphql): the schema that executes requests, not a copy.
// `python -m app dev` must be running; ORDER_API_SCHEMA points elsewhere (a URL or a file).
const config: CodegenConfig = {
  schema: process.env.ORDER_API_SCHEMA ?? "http://127.0.0.1:8000/graphql/schema.graphql",
  documents: ["src/**/*.ts", "!src/gql/**"],
  generates: {
    "src/gql/": {
      preset: "client",
      config: {
        // The contract's scalars travel as strings: Decimal as "187.25", never a float.
        scalars: { Decimal: "string", UUID: "string", DateTime: "string" },
        enumsAsTypes: true,
        useTypeImports: true,
        // Node's ES modules need the ".js" on relative imports; bundlers accept it too.
        importExtension: ".js",
      },
      presetConfig: {
        // Trusted documents (issue 21): writes src/gql/persisted-documents.json, each
        // operation's text under the id "sha256:<hex of the text>" (README.md).
        // persistedDocuments: true,
      },
    },
  },
};

export default config;
