"""GraphiQL, served whole by the product: the page and every asset it loads, no CDN.

The assets are the npm packages' published builds, pinned here by version and by the same
SHA-384 digests Strawberry's own GraphiQL page pins for the CDN (so these are the bytes it loads
from there). ``scripts/graphiql_assets.py`` fetches them again with ``npm pack`` and refuses any
file whose digest differs; they and the packages' licence files are committed under
``static/graphiql``, and the page names each with its ``integrity`` digest too.

Strawberry's page also loads js-cookie, only to send a Django CSRF cookie; this API uses no
cookies, so our page does without it.

In ``dev`` the page opens with example operations and the dev token in the Headers tab
(``Defaults``): the page itself is the same everywhere (endpoint.py serves it), and fetches
``/graphiql/defaults.json``, which answers ``{}`` unless the app was given defaults. ``serve``
never is: a token served to whoever asks would be a leak.

The page hands the Headers tab to subscriptions: browsers cannot set headers on a WebSocket, so
the same headers (which GraphiQL keeps in localStorage) become the socket's connection_init
payload, where graphql/websocket.py authenticates them exactly like an HTTP request's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"
ASSETS_PATH = "/graphiql"
"""Where the assets are served; the page names them relative to /graphql."""


@dataclass(frozen=True)
class Asset:
    name: str
    """File name under STATIC_DIR and ASSETS_PATH."""
    package: str
    """The npm package and exact version whose published build it is."""
    member: str
    """Its path in the package's tarball."""
    sha384: str
    """Subresource Integrity digest (base64), checked by the fetch script and by the browser."""


ASSETS = (
    Asset(
        "react.production.min.js",
        "react@18.2.0",
        "package/umd/react.production.min.js",
        "tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
    ),
    Asset(
        "react-dom.production.min.js",
        "react-dom@18.2.0",
        "package/umd/react-dom.production.min.js",
        "bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
    ),
    Asset(
        "graphiql.min.css",
        "graphiql@3.8.3",
        "package/graphiql.min.css",
        "Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
    ),
    Asset(
        "graphiql.min.js",
        "graphiql@3.8.3",
        "package/graphiql.min.js",
        "HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    ),
    Asset(
        "plugin-explorer.css",
        "@graphiql/plugin-explorer@1.0.2",
        "package/dist/style.css",
        "5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi",
    ),
    Asset(
        "plugin-explorer.umd.js",
        "@graphiql/plugin-explorer@1.0.2",
        "package/dist/index.umd.js",
        "2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9",
    ),
)

LICENSES = (
    # (package, member in its tarball, file name under STATIC_DIR/licenses)
    ("react@18.2.0", "package/LICENSE", "react.LICENSE"),
    ("react-dom@18.2.0", "package/LICENSE", "react-dom.LICENSE"),
    ("graphiql@3.8.3", "package/LICENSE", "graphiql.LICENSE"),
    # @graphiql/plugin-explorer publishes no licence file (package.json: MIT, the graphiql
    # repository, whose LICENSE is graphiql.LICENSE); its bundle includes graphiql-explorer.
    ("graphiql-explorer@0.9.0", "package/LICENSE", "graphiql-explorer.LICENSE"),
)

_ASSET = {asset.name: asset for asset in ASSETS}

# Reads the headers GraphiQL persists (shouldPersistHeaders) for the active tab: the socket's
# connection_init payload, evaluated at each (re)connection so edits to the tab apply.
_SCRIPT = """
const parameters = Object.fromEntries(new URLSearchParams(window.location.search));

function updateURL(changes) {
  Object.assign(parameters, changes);
  const search = new URLSearchParams(
    Object.entries(parameters).filter(([, value]) => Boolean(value)),
  );
  history.replaceState(null, "", "?" + search.toString());
}

const fetchURL = window.location.href.split("?")[0].split("#")[0];
const subscriptionUrl = fetchURL.replace(/^http/, "ws");

function persistedHeaders() {
  const parse = (text) => {
    try { return JSON.parse(text || "{}") || {}; } catch (error) { return {}; }
  };
  const state = parse(localStorage.getItem("graphiql:tabState"));
  const tab = state.tabs && state.tabs[state.activeTabIndex];
  return parse((tab && tab.headers) || localStorage.getItem("graphiql:headers"));
}

const fetcher = GraphiQL.createFetcher({
  url: fetchURL,
  subscriptionUrl,
  wsConnectionParams: persistedHeaders,
});
const explorer = GraphiQLPluginExplorer.explorerPlugin();

function OrderApiGraphiQL({ tabs }) {
  return React.createElement(GraphiQL, {
    fetcher,
    defaultTabs: parameters.q ? undefined : tabs,  // a link's query wins over the examples
    plugins: [explorer],
    defaultEditorToolsVisibility: true,
    query: parameters.q,
    variables: parameters.variables,
    headers: parameters.headers,
    onEditQuery: (q) => updateURL({ q }),
    onEditVariables: (variables) => updateURL({ variables }),
    inputValueDeprecation: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true,
  });
}

// GraphiQL uses defaultTabs only while the browser has no tabs of its own stored.
fetch("graphiql/defaults.json", { cache: "no-store" })
  .then((response) => (response.ok ? response.json() : {}))  // {} unless dev
  .catch((error) => {
    console.warn("GraphiQL defaults not loaded", error);
    return {};
  })
  .then((defaults) => {
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(OrderApiGraphiQL, defaults),
    );
  });
"""

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>Order API GraphiQL</title>
    <link rel="icon" href="data:," />
    <style>
      body {{ height: 100%; margin: 0; width: 100%; overflow: hidden; }}
      #graphiql {{ height: 100vh; display: flex; }}
    </style>
    {head}
  </head>
  <body>
    <div id="graphiql" class="graphiql-container">Loading...</div>
    {body}
    <script>{script}</script>
  </body>
</html>
"""


def _tag(name: str) -> str:
    asset = _ASSET[name]
    src = f"{ASSETS_PATH.lstrip('/')}/{name}"  # relative to /graphql: works under a path prefix
    integrity = f'integrity="sha384-{asset.sha384}"'
    if name.endswith(".css"):
        return f'<link rel="stylesheet" href="{src}" {integrity} />'
    return f'<script src="{src}" {integrity}></script>'


def _script_hash() -> str:
    return base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()


# The page loads nothing from anywhere else, and the policy says so to the browser: its one
# inline script is allowed by digest; GraphiQL injects styles and inlines fonts as data: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src 'self' 'sha256-{_script_hash()}'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@functools.cache
def page_html() -> str:
    # React first, then GraphiQL (which uses it), then the explorer (which uses both).
    head = ("graphiql.min.css", "plugin-explorer.css")
    body = (
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "plugin-explorer.umd.js",
    )
    return _PAGE.format(
        head="\n    ".join(map(_tag, head)),
        body="\n    ".join(map(_tag, body)),
        script=_SCRIPT,
    )


def page_response() -> HTMLResponse:
    return HTMLResponse(
        page_html(),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


EXAMPLES = (
    (
        "query Orders {\n  orders(first: 10) {\n    edges { node { id symbol side quantity"
        " status filledQuantity averageFillPrice } }\n    pageInfo { hasNextPage endCursor }\n"
        "  }\n}\n",
        None,
    ),
    (
        "mutation Submit($input: SubmitOrderInput!) {\n  submitOrder(input: $input) {"
        " id status }\n}\n",
        {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 10, "orderType": "MARKET"}},
    ),
    (
        "subscription Updates {\n  orderUpdates { id symbol status filledQuantity"
        " averageFillPrice }\n}\n",
        None,
    ),
)
"""dev's GraphiQL tabs: a page of orders, a submit, the caller's order updates. GraphiQL ends a
tab's subscription when another tab is selected, so the README runs Updates and Submit in two
browser windows (measured in Chromium)."""


@dataclass(frozen=True)
class Defaults:
    """What GraphiQL opens with in a browser that has no tabs stored yet: ``EXAMPLES``, each
    tab with ``headers`` in its Headers tab. Only ``dev`` gives create_app these."""

    headers: dict[str, str]

    def body(self) -> dict[str, object]:
        headers = json.dumps(self.headers, indent=2)
        return {
            "tabs": [
                {
                    "query": query,
                    "variables": None if variables is None else json.dumps(variables, indent=2),
                    "headers": headers,
                }
                for query, variables in EXAMPLES
            ]
        }


def defaults_route(defaults: Defaults | None) -> Route:
    """dev's defaults, or none (``{}``: GraphiQL opens empty). Always answered, so that the
    page's fetch never fails in a browser's console."""

    async def serve(request: Request) -> JSONResponse:
        # no-store: it may hold a token.
        body = {} if defaults is None else defaults.body()
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return Route(f"{ASSETS_PATH}/defaults.json", serve, methods=["GET"])


def assets_mount() -> Mount:
    """The assets at ASSETS_PATH (the licence files included, under licenses/)."""
    return Mount(ASSETS_PATH, app=StaticFiles(directory=STATIC_DIR), name="graphiql")
