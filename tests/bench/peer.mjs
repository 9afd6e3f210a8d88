// peer.mjs - the reference peer for make bench (issue #7).
//
// The official TypeScript SDK (@modelcontextprotocol/sdk 1.32.x) serving the
// same 57 tools over Streamable HTTP on Node, session era, the way its own
// examples do it: one StreamableHTTPServerTransport (stateful, random UUID
// session ids, enableJsonResponse so that it answers application/json as
// calid-mcp does) and one Server per session, on node:http.
//
// It uses the SDK's low-level `Server` with setRequestHandler for tools/list
// and tools/call, not `McpServer`: McpServer.registerTool in 1.32 accepts only
// Zod schemas ("inputSchema must be a Zod schema or raw shape"), while the
// low-level Server answers tools/list with the JSON Schemas exactly as
// calid-mcp lists them. Arguments are checked with the SDK's own Ajv
// validator, compiled once per tool at start and shared by every session's
// Server (by default each Server makes its own Ajv instance; sharing it only
// makes the peer faster).
//
//   node peer.mjs --port P --upstream https://localhost:F --tools tools.json
//                 --catalog calid_mcp.c
//
// tools.json is calid-mcp's own tools/list result (the array), fetched by the
// bench at start. --catalog is the C file holding the catalog rows
// ({"name", "METHOD", "/path", flags, ...}: calid_mcp.c, or catalog.inc in
// older trees); they give each tool's method and path (the route map).
// tools/call forwards to the API with fetch and the caller's bearer token, as
// calid-mcp does: {x} path parameters percent-encoded, the other arguments as
// the query (GET, DELETE) or the JSON body (POST, PATCH); the API's JSON
// answer becomes the text of one text content item. Trust the test CA with
// NODE_EXTRA_CA_CERTS. Prints "listening PORT" when ready.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema, isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const port = Number(args.port ?? 0);
const upstream = (args.upstream ?? 'https://api.cal.id').replace(/\/$/, '');
const tools = JSON.parse(readFileSync(args.tools, 'utf8'));

// The route map: the first columns of each catalog row, X(name, "METHOD", "/path", KIND, FLAGS, ...)
const routes = new Map();
for (const m of readFileSync(args.catalog, 'utf8').matchAll(/^X\(([a-z_]+),\s*"(GET|POST|PUT|PATCH|DELETE)",\s*"([^"]+)",[\s\\]*\w+,\s*([^,]+),/gm))
  routes.set(m[1], { method: m[2], path: m[3], multipart: /T_MULTIPART/.test(m[4]) });

const validator = new AjvJsonSchemaValidator();
const byName = new Map();
for (const t of tools) {
  const r = routes.get(t.name);
  if (!r) throw new Error(`no route for ${t.name} in ${args.catalog}`);
  byName.set(t.name, { ...r, check: validator.getValidator(t.inputSchema) });
}

const text = (s, isError) => ({ content: [{ type: 'text', text: s }], isError });

async function callTool(name, a, token) {
  const t = byName.get(name);
  if (!t) return text(`Unknown tool: ${name}`, true);
  a = a ?? {};
  const v = t.check(a);
  if (!v.valid) return text(`Invalid arguments for ${name}: ${v.errorMessage}`, true);
  if (t.multipart) return text('multipart uploads are not part of the bench peer', true);
  const used = new Set();
  let path = t.path.replace(/\{(\w+)\}/g, (_, k) => {
    used.add(k);
    return encodeURIComponent(String(a[k]));
  });
  const rest = Object.entries(a).filter(([k, val]) => !used.has(k) && val !== null);
  const init = { method: t.method, headers: { authorization: `Bearer ${token}`, accept: 'application/json' } };
  if (t.method === 'GET' || t.method === 'DELETE') {
    const q = new URLSearchParams();
    for (const [k, val] of rest)
      for (const x of Array.isArray(val) ? val : [val]) q.append(k, typeof x === 'object' ? JSON.stringify(x) : String(x));
    const qs = q.toString();
    if (qs) path += '?' + qs;
  } else {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(Object.fromEntries(rest));
  }
  let res, body;
  for (let attempt = 1; ; attempt++) {
    try {
      res = await fetch(upstream + path, init);
      body = await res.text();
      break;
    } catch (e) {
      // a kept-alive connection the API closed under us: once more on a new one (as calid-mcp does)
      if (attempt < 2) continue;
      return text(`Could not complete the Cal ID API request: ${e.cause?.message ?? e.message}`, true);
    }
  }
  if (res.status >= 300) {
    let m = '';
    try { m = JSON.parse(body).message ?? ''; } catch { /* not JSON */ }
    return text(`Cal ID API error ${res.status}${m ? ': ' + m : ''}\n${body}`, true);
  }
  try { JSON.parse(body); } catch { return text(`The Cal ID API answered ${res.status} with content that is not JSON`, true); }
  return text(body, false);
}

function newServer() {
  const s = new Server({ name: 'calid-mcp-peer', version: '0.0.0' },
    { capabilities: { tools: { listChanged: false } }, jsonSchemaValidator: validator });
  s.setRequestHandler(ListToolsRequestSchema, async () => ({ tools }));
  s.setRequestHandler(CallToolRequestSchema, async (req, extra) =>
    callTool(req.params.name, req.params.arguments, extra.authInfo?.token ?? ''));
  return s;
}

const transports = new Map(); // session id -> transport

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function reply(res, status, obj) {
  const b = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
  res.end(b);
}

const server = http.createServer(async (req, res) => {
  try {
    const url = req.url.split('?')[0];
    if (url === '/healthz') return reply(res, 200, { status: 'ok', sessions: transports.size });
    if (url !== '/mcp') return reply(res, 404, { error: 'not found' });
    const auth = req.headers.authorization ?? '';
    if (!/^bearer /i.test(auth)) return reply(res, 401, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Unauthorized' } });
    req.auth = { token: auth.slice(7).trim(), clientId: 'bench', scopes: [] };
    let body;
    if (req.method === 'POST') {
      const raw = await readBody(req);
      try { body = JSON.parse(raw); } catch {
        return reply(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
      }
    }
    const sid = req.headers['mcp-session-id'];
    let transport = sid ? transports.get(sid) : undefined;
    if (!transport) {
      if (sid) return reply(res, 404, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } });
      if (req.method !== 'POST' || !isInitializeRequest(body))
        return reply(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: no valid session id' } });
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: true,
        onsessioninitialized: (id) => { transports.set(id, transport); },
      });
      transport.onclose = () => { if (transport.sessionId) transports.delete(transport.sessionId); };
      await newServer().connect(transport);
    }
    await transport.handleRequest(req, res, body);
  } catch (e) {
    if (!res.headersSent) reply(res, 500, { jsonrpc: '2.0', id: null, error: { code: -32603, message: String(e) } });
  }
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
