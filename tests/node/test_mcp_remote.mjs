// calid-mcp behind mcp-remote, started the way the README's bridge config does:
//
//   "command": "npx",
//   "args": ["-y", "mcp-remote", "<url>/mcp", "--transport", "http-first",
//            "--header", "Authorization:${CALID_AUTH_HEADER}"],
//   "env": { "CALID_AUTH_HEADER": "Bearer calid_xxx" }
//
// The host passes "${CALID_AUTH_HEADER}" through literally; mcp-remote itself
// replaces ${VAR} in --header values from its environment (no space after the
// colon, so hosts that split arguments on spaces cannot break the header).
// mcp-remote does not read MCP_REMOTE_HEADER_AUTHORIZATION. Plain http is
// allowed for 127.0.0.1 and localhost without --allow-http.
//
// The v1 SDK client drives mcp-remote over its stdio; mcp-remote talks to
// calid-mcp over Streamable HTTP; calid-mcp calls the fake Cal ID API.
// mcp-remote keeps state in ~/.mcp-auth: HOME and MCP_REMOTE_CONFIG_DIR point
// at a temporary directory.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport, getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
    HERE, assert, assertEqual, cleanup, expectedToolNames, headerOf, resultJson, resultText, run, startFake, startServer, test,
} from './lib.mjs';

const MCP_REMOTE = path.join(HERE, 'node_modules', '.bin', 'mcp-remote');
const TOKEN = 'calid_xxx';

async function setup() {
    const fake = await startFake();
    cleanup(() => fake.stop());
    const server = await startServer({ fake });
    cleanup(() => server.stop());
    const home = mkdtempSync(path.join(os.tmpdir(), 'calid-mcp-remote-'));
    cleanup(() => rmSync(home, { recursive: true, force: true }));
    return { fake, server, home, expected: expectedToolNames() };
}

/** Starts mcp-remote with these extra arguments and connects the v1 client to it. */
async function connectBridge({ server, home }, args, env = {}) {
    const transport = new StdioClientTransport({
        command: MCP_REMOTE,
        args: [server.url, ...args],
        env: {
            ...getDefaultEnvironment(),
            HOME: home,
            MCP_REMOTE_CONFIG_DIR: path.join(home, '.mcp-auth'),
            BROWSER: 'true', // never open a browser, should OAuth ever be attempted
            // over HTTPS the bridge must trust the test CA, as a user's config would say in "env"
            ...(process.env.NODE_EXTRA_CA_CERTS ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : {}),
            ...env,
        },
        stderr: 'pipe',
    });
    let stderr = '';
    transport.stderr?.on('data', (d) => (stderr += d));
    const client = new Client({ name: 'calid-mcp-tests-mcp-remote', version: '1.0.0' });
    cleanup(() => client.close());
    try {
        await client.connect(transport);
    } catch (e) {
        e.message += ` (mcp-remote stderr: ${stderr.slice(-800)})`;
        throw e;
    }
    return { client, stderr: () => stderr };
}

// calid-mcp puts _meta.serverInfo on results only in the 2026-07-28 era: it shows
// which era mcp-remote spoke upstream.
const SERVER_INFO = 'io.modelcontextprotocol/serverInfo';

async function listAndCall(bridge, { fake, expected }, { modern = false } = {}) {
    try {
        const { tools } = await bridge.client.listTools();
        assertEqual(tools.map((t) => t.name).sort(), expected, 'tool names through mcp-remote');
        await fake.reset();
        const result = await bridge.client.callTool({ name: 'get_users_me', arguments: {} });
        assert(result.isError !== true, `tool error: ${resultText(result).slice(0, 400)}`);
        assertEqual(Boolean(result._meta && result._meta[SERVER_INFO]), modern,
            `tool result from the ${modern ? '2026-07-28' : 'session'} era (has _meta.serverInfo)`);
        const hits = await fake.find('GET', '/users/me');
        assertEqual(hits.length, 1, 'GET /users/me requests recorded by the fake');
        assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${TOKEN}`, 'Authorization the API received');
        const direct = await fake.get('/users/me', TOKEN);
        assertEqual(resultJson(result), direct.json, "tool result vs the fake's answer");
    } catch (e) {
        e.message += ` (mcp-remote stderr: ${bridge.stderr().slice(-800)})`;
        throw e;
    } finally {
        await bridge.client.close();
    }
}

test('README bridge: --transport http-first --header "Authorization:${CALID_AUTH_HEADER}"', async (ctx) => {
    const bridge = await connectBridge(ctx, ['--transport', 'http-first', '--header', 'Authorization:${CALID_AUTH_HEADER}'], {
        CALID_AUTH_HEADER: `Bearer ${TOKEN}`,
    });
    await listAndCall(bridge, ctx);
});

test('--header-file with "Authorization: Bearer calid_xxx"', async (ctx) => {
    const file = path.join(ctx.home, 'headers.txt');
    writeFileSync(file, `# calid\nAuthorization: Bearer ${TOKEN}\n`, { mode: 0o600 });
    const bridge = await connectBridge(ctx, ['--transport', 'http-first', '--header-file', file]);
    await listAndCall(bridge, ctx);
});

test('--protocol auto (mcp-remote bridges a 2025 client to the 2026-07-28 era)', async (ctx) => {
    const bridge = await connectBridge(ctx, ['--transport', 'http-first', '--protocol', 'auto', '--header', 'Authorization:${CALID_AUTH_HEADER}'], {
        CALID_AUTH_HEADER: `Bearer ${TOKEN}`,
    });
    await listAndCall(bridge, ctx, { modern: true });
});

run('test_mcp_remote: mcp-remote as the stdio bridge', setup);
