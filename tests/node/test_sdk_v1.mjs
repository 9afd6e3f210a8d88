// calid-mcp driven by the v1 TypeScript SDK client (@modelcontextprotocol/sdk 1.32),
// (a) over Streamable HTTP with the caller's bearer token, (b) over stdio with the
// key in CALID_API_KEY. Tool calls reach the fake Cal ID API (tests/fake_calid.py).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport, getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import {
    SERVER_BIN, assert, assertEqual, cleanup, expectedToolNames, headerOf, rejects, resultJson, resultText, run, sleep,
    startFake, startServer, stdioEnv, test,
} from './lib.mjs';

const TOKEN = 'calid_test';
const STDIO_KEY = 'calid_stdio';
const clientInfo = { name: 'calid-mcp-tests-sdk-v1', version: '1.0.0' };

/** Checks that a tool result carries exactly what the fake answers for the same request. */
async function assertCarriesFakeAnswer(fake, result, apiPath, token) {
    assert(result.isError !== true, `tool result is an error: ${resultText(result).slice(0, 400)}`);
    const got = resultJson(result);
    const direct = await fake.get(apiPath, token);
    assert(direct.status === 200 && direct.json !== undefined, `the fake answered GET ${apiPath} with ${direct.status}`);
    assertEqual(got, direct.json, `tool result vs the fake's answer to GET ${apiPath}`);
}

/** Path and query of a recorded request, to repeat it directly. */
function recordedTarget(q) {
    const p = String(q.path);
    const query = typeof q.query === 'string' ? q.query : '';
    return query && !p.includes('?') ? `${p}?${query}` : p;
}

/** Exactly one recorded request with this method and path, carrying this bearer token. */
async function assertRecorded(fake, method, apiPath, token) {
    const hits = await fake.find(method, apiPath);
    const all = (await fake.requests()).map((q) => `${q.method} ${q.path}`);
    assert(hits.length === 1, `the fake should have recorded one ${method} ${apiPath}; it recorded: ${JSON.stringify(all)}`);
    assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${token}`, `Authorization sent to the API for ${method} ${apiPath}`);
    return hits[0];
}

async function setup() {
    const fake = await startFake();
    cleanup(() => fake.stop());
    const server = await startServer({ fake });
    cleanup(() => server.stop());
    return { fake, server, expected: expectedToolNames() };
}

// ---------------------------------------------------------------- (a) Streamable HTTP

let http; // { client, transport }
let bookingId; // the first booking get_booking listed

test('http: connect with Authorization: Bearer calid_test', async ({ server }) => {
    const client = new Client(clientInfo);
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
        requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
    });
    await client.connect(transport);
    http = { client, transport };
    cleanup(() => client.close());
    assert(transport.sessionId, 'the server gave no Mcp-Session-Id');
    const info = client.getServerVersion();
    assert(info && info.name, `no serverInfo: ${JSON.stringify(info)}`);
    assert(client.getServerCapabilities()?.tools, 'the server does not declare the tools capability');
});

test('http: a 3 MB API answer streams through to the SDK client whole (chunked, past the API buffer)', async ({ fake }) => {
    await fake.reset();
    await fake.fault({ path: '/users/me', mode: 'big', size: 3000000, chunked: true });
    const result = await http.client.callTool({ name: 'get_users_me', arguments: {} });
    const text = result.content[0].text;
    assert(result.isError === false && result.content.length === 1, `isError ${result.isError}: ${text.slice(0, 200)}`);
    assertEqual(text.length, 3000000, 'answer length');
    assertEqual(JSON.parse(text).message, 'big answer', 'the answer');
});

test('http: listTools names the 57 tools of calid-tools.tsv', async ({ expected }) => {
    const { tools } = await http.client.listTools();
    assertEqual(tools.map((t) => t.name).sort(), expected, 'tool names');
    for (const t of tools) assert(t.inputSchema && t.inputSchema.type === 'object', `${t.name}: inputSchema.type is not "object"`);
});

test('http: callTool get_users_me carries the fake API answer', async ({ fake }) => {
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_users_me', arguments: {} });
    await assertRecorded(fake, 'GET', '/users/me', TOKEN);
    await assertCarriesFakeAnswer(fake, result, '/users/me', TOKEN);
});

test('http: callTool get_booking carries the fake API answer', async ({ fake }) => {
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_booking', arguments: {} });
    const q = await assertRecorded(fake, 'GET', '/booking', TOKEN);
    await assertCarriesFakeAnswer(fake, result, recordedTarget(q), TOKEN);
    const data = resultJson(result).data;
    assert(Array.isArray(data) && data.length > 0, `the fake's seeded bookings are missing from the result: ${resultText(result).slice(0, 300)}`);
    bookingId = data[0].id;
});

test('http: callTool get_booking_by_id with a listed id reaches GET /booking/{id}', async ({ fake }) => {
    assert(bookingId !== undefined, 'no booking id from get_booking');
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_booking_by_id', arguments: { bookingId } });
    await assertRecorded(fake, 'GET', `/booking/${bookingId}`, TOKEN);
    await assertCarriesFakeAnswer(fake, result, `/booking/${bookingId}`, TOKEN);
    assertEqual(resultJson(result).data.id, bookingId, 'booking id in the result');
});

test('http: an API error (404 for an unknown booking) is a tool error with the status', async ({ fake }) => {
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_booking_by_id', arguments: { bookingId: 987654321 } });
    await assertRecorded(fake, 'GET', '/booking/987654321', TOKEN);
    assertEqual(result.isError, true, 'isError');
    assert(/\b404\b/.test(resultText(result)), `the error text does not carry the status 404: ${resultText(result).slice(0, 300)}`);
});

test('http: get_booking_by_id without bookingId is a tool error (isError), nothing sent', async ({ fake }) => {
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_booking_by_id', arguments: {} });
    assertEqual(result.isError, true, 'isError');
    assert(/bookingId/.test(resultText(result)), `the error text does not name bookingId: ${resultText(result)}`);
    assertEqual((await fake.requests()).length, 0, 'requests sent to the API');
});

test('http: an unknown tool rejects with an MCP error (-32602)', async () => {
    const e = await rejects(http.client.callTool({ name: 'no_such_tool', arguments: {} }), 'callTool(no_such_tool)');
    assert(e instanceof McpError, `expected an McpError, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
    assertEqual(e.code, -32602, 'error code');
});

test('http: 8 concurrent tool calls on one session all get their own answer', async ({ fake }) => {
    await fake.reset();
    const calls = Array.from({ length: 8 }, (_, i) =>
        i % 2 ? http.client.callTool({ name: 'get_users_me', arguments: {} }) : http.client.callTool({ name: 'get_booking_by_id', arguments: { bookingId } }));
    const results = await Promise.all(calls);
    const me = (await fake.get('/users/me', TOKEN)).json;
    const booking = (await fake.get(`/booking/${bookingId}`, TOKEN)).json;
    results.forEach((r, i) => assertEqual(resultJson(r), i % 2 ? me : booking, `result ${i}`));
});

test('http: a non-ASCII argument reaches the API and comes back intact', async ({ fake }) => {
    await fake.reset();
    const name = 'Zoë Ångström 東京 "quoted" \\ back\u2028slash';
    const result = await http.client.callTool({ name: 'create_contact', arguments: { name, email: 'zoe@example.test' } });
    assert(result.isError !== true, `tool error: ${resultText(result).slice(0, 400)}`);
    assertEqual(resultJson(result).data.name, name, 'contact name in the result');
    const [q] = await fake.find('POST', '/contacts');
    assert(q, 'the fake recorded no POST /contacts');
    assertEqual(JSON.parse(q.body).name, name, 'contact name in the API request body');
});

test('http: a call cancelled while the API stalls is rejected; the session goes on', async ({ fake }) => {
    await fake.reset();
    await fake.fault({ path: '/users/me', mode: 'stall', delay_ms: 20000, count: 1 });
    const ac = new AbortController();
    const pending = http.client.callTool({ name: 'get_users_me', arguments: {} }, undefined, { signal: ac.signal });
    for (let i = 0; i < 200 && (await fake.find('GET', '/users/me')).length === 0; i++) await sleep(25);
    assertEqual((await fake.find('GET', '/users/me')).length, 1, 'the stalled request reached the API');
    ac.abort();
    await rejects(pending, 'the cancelled call');
    await fake.reset();
    const result = await http.client.callTool({ name: 'get_users_me', arguments: {} });
    await assertCarriesFakeAnswer(fake, result, '/users/me', TOKEN);
});

test('http: ping, then close the session', async () => {
    await http.client.ping();
    await http.transport.terminateSession();
    await http.client.close();
});

test('http: without a token the server refuses with 401 and calls no API', async ({ fake, server }) => {
    await fake.reset();
    const client = new Client(clientInfo);
    const e = await rejects(client.connect(new StreamableHTTPClientTransport(new URL(server.url))), 'connect without a token');
    await client.close();
    assert(e.code === 401 || /\b401\b|Unauthorized/.test(String(e.message)), `expected a 401 refusal, got code ${e.code}: ${e.message}`);
    assertEqual((await fake.requests()).length, 0, 'requests sent to the API');
});

// ---------------------------------------------------------------- (b) stdio

test('stdio: connect to `calid_mcp --stdio`, list tools, call get_users_me', async ({ fake, expected }) => {
    await fake.reset();
    const transport = new StdioClientTransport({
        command: SERVER_BIN,
        args: ['--stdio'],
        env: stdioEnv(fake, STDIO_KEY, getDefaultEnvironment()),
        stderr: 'pipe',
    });
    let stderr = '';
    transport.stderr?.on('data', (d) => (stderr += d));
    const client = new Client(clientInfo);
    cleanup(() => client.close());
    try {
        await client.connect(transport);
        const { tools } = await client.listTools();
        assertEqual(tools.map((t) => t.name).sort(), expected, 'tool names over stdio');
        const result = await client.callTool({ name: 'get_users_me', arguments: {} });
        await assertRecorded(fake, 'GET', '/users/me', STDIO_KEY);
        await assertCarriesFakeAnswer(fake, result, '/users/me', STDIO_KEY);
        const bad = await client.callTool({ name: 'get_booking_by_id', arguments: {} });
        assertEqual(bad.isError, true, 'isError for a missing bookingId over stdio');
        const e = await rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), 'callTool(no_such_tool) over stdio');
        assertEqual(e.code, -32602, 'error code over stdio');
    } catch (e) {
        if (stderr) e.message += ` (server stderr: ${stderr.slice(-600)})`;
        throw e;
    } finally {
        await client.close();
    }
});

run('test_sdk_v1: @modelcontextprotocol/sdk 1.32 client', setup);
