// The official SDK clients against calid-mcp running as firmware under
// qemu-system-arm (tests/firmware/test_firmware.py starts both the board and
// the fake API): v1 in the session era and v2 pinned to 2026-07-28, each
// listing the tools and making tool calls that reach the fake API over TLS
// through the firmware's own network stack.
//   FW_URL=http://127.0.0.1:PORT/mcp FAKE_URL=https://127.0.0.1:PORT node tests/node/firmware_clients.mjs

import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { assert, assertEqual, cleanup, expectedToolNames, resultJson, run, test } from './lib.mjs';

const FW_URL = process.env.FW_URL;
const FAKE_URL = process.env.FAKE_URL;
const TOKEN = 'calid_firmware';

/** The fake's recorded requests (the control API accepts the test CA via NODE_EXTRA_CA_CERTS). */
async function recorded() {
    const r = await fetch(`${FAKE_URL}/__fake/requests`);
    const j = await r.json();
    return Array.isArray(j) ? j : j.requests || [];
}

async function toolRun(client, what) {
    const listed = await client.listTools();
    const names = listed.tools.map((t) => t.name).sort();
    assertEqual(names, [...expectedToolNames()].sort(), `${what}: tools/list names`);
    const before = (await recorded()).length;
    const me = await client.callTool({ name: 'get_users_me', arguments: {} });
    assert(me.isError !== true, `${what}: get_users_me failed: ${JSON.stringify(me).slice(0, 300)}`);
    assert(resultJson(me).success === true, `${what}: get_users_me did not carry the API's answer`);
    const types = await client.callTool({ name: 'get_event_types', arguments: {} });
    assert(types.isError !== true, `${what}: get_event_types failed: ${JSON.stringify(types).slice(0, 300)}`);
    const after = await recorded();
    const mine = after.slice(before);
    assertEqual(mine.length, 2, `${what}: API requests the fake received for two tool calls`);
    for (const q of mine) {
        const auth = (q.headers && (q.headers.authorization || q.headers.Authorization)) || q.authorization;
        assertEqual(auth, `Bearer ${TOKEN}`, `${what}: the key the API received`);
    }
}

test('SDK v1 (session era) lists the tools and calls two through the firmware', async () => {
    const client = new ClientV1({ name: 'firmware-v1', version: '1.0.0' });
    cleanup(() => client.close());
    await client.connect(new TransportV1(new URL(FW_URL), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } }));
    await toolRun(client, 'v1');
}, { timeoutMs: 40000 });

test('SDK v2 (pinned 2026-07-28) lists the tools and calls two through the firmware', async () => {
    const client = new ClientV2({ name: 'firmware-v2', version: '1.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    cleanup(() => client.close());
    await client.connect(new TransportV2(new URL(FW_URL), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } }));
    await toolRun(client, 'v2');
}, { timeoutMs: 40000 });

run('firmware clients', () => {
    assert(FW_URL && FAKE_URL, 'FW_URL and FAKE_URL must be set');
}, { totalMs: 120000 });
