// A long-lived MCP client for tests/test_scaleout.py, which drives it over
// stdin/stdout: it connects once to URL (a balancer in front of several
// calid-mcp instances), then for each line "run N" on stdin lists the tools
// and makes N tool calls, and prints one JSON line with what it saw; "end"
// ends the session (DELETE, session era) and exits.
//
//   node tests/node/scaleout_client.mjs v1|v2 URL TOKEN
//
// v1: @modelcontextprotocol/sdk 1.x, the session era (Mcp-Session-Id).
// v2: @modelcontextprotocol/client 2.x pinned to protocol 2026-07-28.

import { createInterface } from 'node:readline';

const [kind, url, token] = process.argv.slice(2);
const TOOLS = [
    ['get_users_me', {}],
    ['get_teams', {}],
    ['get_event_types', {}],
];
const clientInfo = { name: `calid-mcp-scaleout-${kind}`, version: '1.0.0' };
const requestInit = { headers: { Authorization: `Bearer ${token}` } };

async function connect() {
    if (kind === 'v1') {
        const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
        const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
        const client = new Client(clientInfo);
        const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit });
        await client.connect(transport);
        return { client, transport };
    }
    const { Client, StreamableHTTPClientTransport } = await import('@modelcontextprotocol/client');
    const client = new Client(clientInfo, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit });
    await client.connect(transport);
    return { client, transport };
}

/** One run: list the tools, then n calls; every failure is recorded, never thrown. */
async function runOnce({ client, transport }, n) {
    const out = { tools: 0, ok: 0, failed: [], sessionId: transport.sessionId || null };
    try {
        out.tools = (await client.listTools()).tools.length;
    } catch (e) {
        out.failed.push(`listTools: ${e.message}`);
    }
    for (let i = 0; i < n; i++) {
        const [name, args] = TOOLS[i % TOOLS.length];
        try {
            const r = await client.callTool({ name, arguments: args });
            const text = (r.content || []).find((c) => c.type === 'text')?.text || '';
            if (r.isError) out.failed.push(`${name}: tool error ${text.slice(0, 200)}`);
            else {
                JSON.parse(text);
                out.ok++;
            }
        } catch (e) {
            out.failed.push(`${name}: ${e.message}`);
        }
    }
    out.sessionIdAfter = transport.sessionId || null;
    return out;
}

const conn = await connect().catch((e) => {
    process.stdout.write(JSON.stringify({ connectError: e.message }) + '\n');
    process.exit(1);
});
process.stdout.write(JSON.stringify({ connected: true, sessionId: conn.transport.sessionId || null }) + '\n');
for await (const line of createInterface({ input: process.stdin })) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'run') {
        process.stdout.write(JSON.stringify(await runOnce(conn, Number(arg))) + '\n');
    } else if (cmd === 'end') {
        let ended = null;
        if (kind === 'v1') {
            try {
                await conn.transport.terminateSession();
                ended = 'ok';
            } catch (e) {
                ended = e.message;
            }
        }
        await conn.client.close();
        process.stdout.write(JSON.stringify({ ended }) + '\n');
        break;
    }
}
process.exit(0);
