// calid-mcp driven by the v2 TypeScript SDK client (@modelcontextprotocol/client 2.4)
// over Streamable HTTP: once pinned to protocol 2026-07-28
// (versionNegotiation.mode = { pin: '2026-07-28' }) and once with automatic
// negotiation (mode 'auto': a server/discover probe, then the era it shows);
// then the client's default legacy mode, and stdio pinned and auto.
// Tool calls reach the fake Cal ID API (tests/fake_calid.py).

import { Client, ProtocolError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport, getDefaultEnvironment } from '@modelcontextprotocol/client/stdio';
import {
    SERVER_BIN, assert, assertEqual, cleanup, expectedToolNames, headerOf, rejects, resultJson, resultText, run, sleep, startFake,
    startServer, stdioEnv, test,
} from './lib.mjs';

const MODERN = '2026-07-28';
const TOKEN = 'calid_v2';

/** A fetch that records every exchange: method, request headers and body, status, response headers. */
function recordingFetch(log) {
    return async (url, init = {}) => {
        const reqHeaders = new Headers(init.headers || {});
        let body;
        try {
            body = typeof init.body === 'string' ? JSON.parse(init.body) : undefined;
        } catch {
            body = init.body;
        }
        const entry = { method: init.method || 'GET', url: String(url), reqHeaders, body };
        log.push(entry);
        let res;
        try {
            res = await fetch(url, init);
        } catch (e) {
            entry.error = e; // a cancelled call aborts its fetch
            throw e;
        }
        entry.status = res.status;
        entry.resHeaders = res.headers;
        return res;
    };
}

function makeClient(server, mode) {
    const exchanges = [];
    const client = new Client({ name: 'calid-mcp-tests-sdk-v2', version: '1.0.0' }, { versionNegotiation: { mode } });
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
        requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
        fetch: recordingFetch(exchanges),
    });
    cleanup(() => client.close());
    return { client, transport, exchanges };
}

/** What both modes must show once connected: the modern era, no session anywhere. */
function assertModernExchanges(exchanges, what) {
    assert(exchanges.length > 0, `${what}: no HTTP exchange recorded`);
    for (const x of exchanges) {
        const m = x.body && x.body.method;
        assert(m !== 'initialize', `${what}: the client sent initialize (the session era) — the server's discover answer was not taken as modern`);
        assert(!x.reqHeaders.has('mcp-session-id'), `${what}: ${x.method} ${m || ''} carried Mcp-Session-Id`);
        assert(!x.resHeaders || !x.resHeaders.has('mcp-session-id'), `${what}: the answer to ${x.method} ${m || ''} carried Mcp-Session-Id ${x.resHeaders && x.resHeaders.get('mcp-session-id')}`);
        if (x.method === 'POST' && !x.error) {
            assertEqual(x.reqHeaders.get('mcp-protocol-version'), MODERN, `${what}: MCP-Protocol-Version of ${m}`);
            assert(x.status !== undefined && x.status < 300, `${what}: ${m} answered HTTP ${x.status}`);
        }
    }
}

async function setup() {
    const fake = await startFake();
    cleanup(() => fake.stop());
    const server = await startServer({ fake });
    cleanup(() => server.stop());
    return { fake, server, expected: expectedToolNames() };
}

for (const [label, mode] of [[`pinned ${MODERN}`, { pin: MODERN }], ['auto negotiation', 'auto']]) {
    let c;
    test(`${label}: connect selects the modern era`, async ({ server }) => {
        c = makeClient(server, mode);
        await c.client.connect(c.transport);
        assertEqual(c.client.getProtocolEra(), 'modern', 'protocol era');
        assertEqual(c.client.getNegotiatedProtocolVersion(), MODERN, 'negotiated version');
        const first = c.exchanges.find((x) => x.method === 'POST');
        assertEqual(first && first.body && first.body.method, 'server/discover', 'first request');
        const d = c.client.getDiscoverResult();
        assert(d && Array.isArray(d.supportedVersions) && d.supportedVersions.includes(MODERN), `discover result: ${JSON.stringify(d)}`);
        assert(c.client.getServerCapabilities()?.tools, 'the server does not declare the tools capability');
        assertEqual(c.transport.sessionId, undefined, 'transport session id');
    });

    test(`${label}: listTools names the 57 tools`, async ({ expected }) => {
        const { tools } = await c.client.listTools();
        assertEqual(tools.map((t) => t.name).sort(), expected, 'tool names');
    });

    test(`${label}: callTool get_users_me carries the fake API answer`, async ({ fake }) => {
        await fake.reset();
        const result = await c.client.callTool({ name: 'get_users_me', arguments: {} });
        assert(result.isError !== true, `tool error: ${resultText(result).slice(0, 400)}`);
        const hits = await fake.find('GET', '/users/me');
        assertEqual(hits.length, 1, 'GET /users/me requests recorded by the fake');
        assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${TOKEN}`, 'Authorization sent to the API');
        const direct = await fake.get('/users/me', TOKEN);
        assertEqual(resultJson(result), direct.json, "tool result vs the fake's answer");
        const call = c.exchanges.filter((x) => x.body && x.body.method === 'tools/call').pop();
        assertEqual(call.reqHeaders.get('mcp-method'), 'tools/call', 'Mcp-Method header');
        assertEqual(call.reqHeaders.get('mcp-name'), 'get_users_me', 'Mcp-Name header');
    });

    test(`${label}: callTool get_booking reaches GET /booking`, async ({ fake }) => {
        await fake.reset();
        const result = await c.client.callTool({ name: 'get_booking', arguments: { status: 'upcoming' } });
        assert(result.isError !== true, `tool error: ${resultText(result).slice(0, 400)}`);
        const hits = await fake.find('GET', '/booking');
        assertEqual(hits.length, 1, 'GET /booking requests recorded by the fake');
        assert(/(^|&)status=upcoming(&|$)/.test(String(hits[0].query || '')), `query sent to the API: ${JSON.stringify(hits[0].query)}`);
        const direct = await fake.get(`${hits[0].path}?${hits[0].query}`, TOKEN);
        assertEqual(resultJson(result), direct.json, "tool result vs the fake's answer");
        const data = resultJson(result).data;
        assert(Array.isArray(data) && data.length > 0, `the fake's seeded bookings are missing from the result: ${resultText(result).slice(0, 300)}`);
    });

    test(`${label}: an API error (404 for an unknown booking) is a tool error`, async ({ fake }) => {
        await fake.reset();
        const result = await c.client.callTool({ name: 'get_booking_by_id', arguments: { bookingId: 987654321 } });
        assertEqual((await fake.find('GET', '/booking/987654321')).length, 1, 'GET /booking/987654321 recorded by the fake');
        assertEqual(result.isError, true, 'isError');
        assert(/\b404\b/.test(resultText(result)), `the error text does not carry the status 404: ${resultText(result).slice(0, 300)}`);
    });

    test(`${label}: a missing required argument is a tool error`, async ({ fake }) => {
        await fake.reset();
        const result = await c.client.callTool({ name: 'get_booking_by_id', arguments: {} });
        assertEqual(result.isError, true, 'isError');
        assertEqual((await fake.requests()).length, 0, 'requests sent to the API');
    });

    test(`${label}: an unknown tool rejects with a protocol error -32602`, async () => {
        const e = await rejects(c.client.callTool({ name: 'no_such_tool', arguments: {} }), 'callTool(no_such_tool)');
        assert(e instanceof ProtocolError, `expected a ProtocolError, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
        assertEqual(e.code, -32602, 'error code');
    });

    test(`${label}: 8 concurrent tool calls all get their own answer`, async ({ fake }) => {
        await fake.reset();
        const results = await Promise.all(Array.from({ length: 8 }, (_, i) =>
            c.client.callTool(i % 2 ? { name: 'get_users_me', arguments: {} } : { name: 'get_event_types', arguments: {} })));
        const me = (await fake.get('/users/me', TOKEN)).json;
        const types = (await fake.get('/event-types', TOKEN)).json;
        results.forEach((r, i) => assertEqual(resultJson(r), i % 2 ? me : types, `result ${i}`));
    });

    test(`${label}: a call cancelled while the API stalls is rejected; the next call works`, async ({ fake }) => {
        await fake.reset();
        await fake.fault({ path: '/users/me', mode: 'stall', delay_ms: 20000, count: 1 });
        const ac = new AbortController();
        const pending = c.client.callTool({ name: 'get_users_me', arguments: {} }, { signal: ac.signal });
        for (let i = 0; i < 200 && (await fake.find('GET', '/users/me')).length === 0; i++) await sleep(25);
        assertEqual((await fake.find('GET', '/users/me')).length, 1, 'the stalled request reached the API');
        ac.abort();
        await rejects(pending, 'the cancelled call');
        await fake.reset();
        const result = await c.client.callTool({ name: 'get_users_me', arguments: {} });
        assertEqual(resultJson(result), (await fake.get('/users/me', TOKEN)).json, "tool result vs the fake's answer");
    });

    test(`${label}: no Mcp-Session-Id was sent or received, every POST said ${MODERN}`, async () => {
        assertModernExchanges(c.exchanges, label);
        await c.client.close();
    });
}

// The default (no versionNegotiation) is the plain 2025 handshake: calid-mcp serves both eras.
test('default (legacy) mode over HTTP: initialize, a session, a tool call', async ({ fake, server, expected }) => {
    await fake.reset();
    const client = new Client({ name: 'calid-mcp-tests-sdk-v2', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } });
    cleanup(() => client.close());
    await client.connect(transport);
    assertEqual(client.getProtocolEra(), 'legacy', 'protocol era');
    assert(transport.sessionId, 'no Mcp-Session-Id in the session era');
    assertEqual((await client.listTools()).tools.map((t) => t.name).sort(), expected, 'tool names');
    const result = await client.callTool({ name: 'get_users_me', arguments: {} });
    assertEqual(resultJson(result), (await fake.get('/users/me', TOKEN)).json, "tool result vs the fake's answer");
    await client.close();
});

// stdio: pinned runs server/discover on the pipe; auto probes on a short-lived sibling process first.
for (const [label, mode] of [[`stdio pinned ${MODERN}`, { pin: MODERN }], ['stdio auto negotiation', 'auto']]) {
    test(`${label}: modern era, 57 tools, a tool call against the fake`, async ({ fake, expected }) => {
        await fake.reset();
        const transport = new StdioClientTransport({
            command: SERVER_BIN,
            args: ['--stdio'],
            env: stdioEnv(fake, 'calid_stdio_v2', getDefaultEnvironment()),
            stderr: 'pipe',
        });
        let stderr = '';
        transport.stderr?.on('data', (d) => (stderr += d));
        const client = new Client({ name: 'calid-mcp-tests-sdk-v2', version: '1.0.0' }, { versionNegotiation: { mode } });
        cleanup(() => client.close());
        try {
            await client.connect(transport);
            assertEqual(client.getProtocolEra(), 'modern', 'protocol era');
            assertEqual((await client.listTools()).tools.map((t) => t.name).sort(), expected, 'tool names');
            const result = await client.callTool({ name: 'get_users_me', arguments: {} });
            const hits = await fake.find('GET', '/users/me');
            assertEqual(hits.length, 1, 'GET /users/me requests recorded by the fake');
            assertEqual(headerOf(hits[0].headers, 'authorization'), 'Bearer calid_stdio_v2', 'Authorization sent to the API');
            assertEqual(resultJson(result), (await fake.get('/users/me', 'calid_stdio_v2')).json, "tool result vs the fake's answer");
            const bad = await client.callTool({ name: 'get_booking_by_id', arguments: {} });
            assertEqual(bad.isError, true, 'isError for a missing bookingId');
            const e = await rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), 'callTool(no_such_tool)');
            assertEqual(e.code, -32602, 'error code');
        } catch (e) {
            if (stderr) e.message += ` (server stderr: ${stderr.slice(-600)})`;
            throw e;
        } finally {
            await client.close();
        }
    });
}

run('test_sdk_v2: @modelcontextprotocol/client 2.4 over Streamable HTTP', setup);
