// Prompts, resources, completions, logging and tool selection (issue #13)
// through the official SDK clients: the v1 client (@modelcontextprotocol/sdk
// 1.32, the session era) and the v2 client (@modelcontextprotocol/client 2.4,
// pinned to 2026-07-28), each over Streamable HTTP and over stdio. Resource
// reads and tool calls reach the fake Cal ID API (tests/fake_calid.py).

import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as HttpV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport as StdioV1, getDefaultEnvironment } from '@modelcontextprotocol/sdk/client/stdio.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { Client as ClientV2, StreamableHTTPClientTransport as HttpV2 } from '@modelcontextprotocol/client';
import { StdioClientTransport as StdioV2 } from '@modelcontextprotocol/client/stdio';
import { SERVER_BIN, assert, assertEqual, cleanup, headerOf, rejects, run, startFake, startServer, stdioEnv, test } from './lib.mjs';

const MODERN = '2026-07-28';
const TOKEN = 'calid_features';
const PROMPTS = ['book_meeting', 'bookings_this_week', 'contact_meeting_history', 'create_event_type', 'free_slots_on_day'];
const RESOURCES = ['calid://bookings/upcoming', 'calid://event-types', 'calid://me', 'calid://schedules'];
const TEMPLATES = ['calid://bookings/{bookingId}', 'calid://event-types/{eventTypeId}'];
const LOG_LEVEL = 'io.modelcontextprotocol/logLevel';

async function setup() {
    const fake = await startFake();
    cleanup(() => fake.stop());
    const server = await startServer({ fake });
    cleanup(() => server.stop());
    const narrow = await startServer({ fake, args: ['--read-only', '--toolsets', 'bookings'] });
    cleanup(() => narrow.stop());
    return { fake, server, narrow };
}

/** The four ways in: v1 and v2, HTTP and stdio. Each returns { client, logs, modern }. */
const WAYS = {
    'v1 http': async ({ server }, url = server.url) => {
        const client = new ClientV1({ name: 'features-v1', version: '1.0.0' });
        await client.connect(new HttpV1(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } }));
        return { client, modern: false, token: TOKEN };
    },
    'v1 stdio': async ({ fake }) => {
        const client = new ClientV1({ name: 'features-v1', version: '1.0.0' });
        await client.connect(new StdioV1({ command: SERVER_BIN, args: ['--stdio'], env: stdioEnv(fake, 'calid_features_stdio', getDefaultEnvironment()), stderr: 'pipe' }));
        return { client, modern: false, token: 'calid_features_stdio' };
    },
    'v2 http': async ({ server }, url = server.url) => {
        const client = new ClientV2({ name: 'features-v2', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
        await client.connect(new HttpV2(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } } }));
        return { client, modern: true, token: TOKEN };
    },
    'v2 stdio': async ({ fake }) => {
        const client = new ClientV2({ name: 'features-v2', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
        await client.connect(new StdioV2({ command: SERVER_BIN, args: ['--stdio'], env: stdioEnv(fake, 'calid_features_stdio', getDefaultEnvironment()), stderr: 'pipe' }));
        return { client, modern: true, token: 'calid_features_stdio' };
    },
};

/** Log messages the client receives, whichever SDK it is. */
function collectLogs(way, client) {
    const logs = [];
    if (way.startsWith('v1')) client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => logs.push(n.params));
    else client.setNotificationHandler('notifications/message', (n) => logs.push(n.params));
    return logs;
}

for (const way of Object.keys(WAYS)) {
    test(`${way}: capabilities, prompts/list and prompts/get`, async (ctx) => {
        const { client } = await WAYS[way](ctx);
        cleanup(() => client.close());
        const caps = client.getServerCapabilities();
        for (const k of ['tools', 'prompts', 'resources', 'logging', 'completions']) assert(caps && caps[k], `capability ${k} missing: ${JSON.stringify(caps)}`);
        const { prompts } = await client.listPrompts();
        assertEqual(prompts.map((p) => p.name).sort(), PROMPTS, 'prompt names');
        const book = prompts.find((p) => p.name === 'book_meeting');
        assertEqual(book.arguments.filter((a) => a.required).map((a) => a.name), ['attendeeName', 'when'], 'required arguments of book_meeting');
        const got = await client.getPrompt({ name: 'book_meeting', arguments: { attendeeName: 'John Doe', when: 'next Tuesday at 3pm' } });
        const text = got.messages[0].content.text;
        assertEqual(got.messages[0].role, 'user', 'message role');
        for (const w of ['John Doe', 'next Tuesday at 3pm', 'get_event_types', 'get_slots', 'create_booking', 'ask me for it'])
            assert(text.includes(w), `the book_meeting message lacks ${JSON.stringify(w)}: ${text}`);
        const e = await rejects(client.getPrompt({ name: 'book_meeting', arguments: { attendeeName: 'John Doe' } }), 'getPrompt without when');
        assertEqual(e.code, -32602, 'error code for a missing required argument');
        assert(/when/.test(e.message), `the error names the argument: ${e.message}`);
        await client.close();
    });

    test(`${way}: resources, templates and a read that is one API call with the caller's token`, async (ctx) => {
        const { client, token } = await WAYS[way](ctx);
        cleanup(() => client.close());
        const { resources } = await client.listResources();
        assertEqual(resources.map((r) => r.uri).sort(), RESOURCES, 'resource URIs');
        const { resourceTemplates } = await client.listResourceTemplates();
        assertEqual(resourceTemplates.map((r) => r.uriTemplate).sort(), TEMPLATES, 'resource templates');
        await ctx.fake.reset();
        const read = await client.readResource({ uri: 'calid://me' });
        assertEqual(read.contents[0].uri, 'calid://me', 'content uri');
        assertEqual(read.contents[0].mimeType, 'application/json', 'content mimeType');
        assertEqual(JSON.parse(read.contents[0].text), (await ctx.fake.get('/users/me', token)).json, "read vs the fake's answer");
        const hits = await ctx.fake.find('GET', '/users/me');
        assertEqual(hits.length, 2, 'GET /users/me at the fake: the read, then the test\'s own');
        assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${token}`, 'token of the read');
        const e = await rejects(client.readResource({ uri: 'calid://bookings/999999' }), 'read of a booking the API does not have');
        assertEqual(e.code, way.startsWith('v2') ? -32602 : -32002, 'not-found code of this era');
        await client.close();
    });

    test(`${way}: completions of a time zone, a day and an event type`, async (ctx) => {
        const { client } = await WAYS[way](ctx);
        cleanup(() => client.close());
        const tz = await client.complete({ ref: { type: 'ref/prompt', name: 'bookings_this_week' }, argument: { name: 'timeZone', value: 'europe/be' } });
        assertEqual(tz.completion.values, ['Europe/Belgrade', 'Europe/Berlin'], 'time zones for europe/be');
        const day = await client.complete({ ref: { type: 'ref/prompt', name: 'free_slots_on_day' }, argument: { name: 'day', value: 'next m' } });
        assertEqual(day.completion.values, ['next Monday'], 'day words for next m');
        const slugs = await client.complete({ ref: { type: 'ref/prompt', name: 'book_meeting' }, argument: { name: 'eventType', value: 'c' } });
        assertEqual(slugs.completion.values, ['consultation'], "event type slugs from the caller's event types");
        await client.close();
    });

    test(`${way}: a log message for the API call, only when asked for`, async (ctx) => {
        const { client, modern } = await WAYS[way](ctx);
        cleanup(() => client.close());
        const logs = collectLogs(way, client);
        await client.callTool({ name: 'get_users_me', arguments: {} });
        assertEqual(logs.length, 0, 'log messages before any level was asked for');
        if (modern) await client.callTool({ name: 'get_users_me', arguments: {}, _meta: { [LOG_LEVEL]: 'info' } });
        else {
            await client.setLoggingLevel('info');
            await client.callTool({ name: 'get_users_me', arguments: {} });
        }
        assertEqual(logs.length, 1, `log messages after asking for info: ${JSON.stringify(logs)}`);
        assertEqual(logs[0].level, 'info', 'level');
        assertEqual(logs[0].data.method, 'GET', 'logged method');
        assertEqual(logs[0].data.path, '/users/me', 'logged path');
        assertEqual(logs[0].data.status, 200, 'logged status');
        assert(Number.isInteger(logs[0].data.ms), `logged ms: ${JSON.stringify(logs[0])}`);
        assert(!JSON.stringify(logs).includes('calid_features'), 'a log message carries the token');
        await client.close();
    });
}

for (const way of ['v1 http', 'v2 http']) {
    test(`${way}: --read-only --toolsets bookings lists and runs only the two booking reads`, async (ctx) => {
        const { client } = await WAYS[way](ctx, ctx.narrow.url);
        cleanup(() => client.close());
        assertEqual((await client.listTools()).tools.map((t) => t.name).sort(), ['get_booking', 'get_booking_by_id'], 'tools');
        assertEqual((await client.listPrompts()).prompts.map((p) => p.name), ['bookings_this_week'], 'prompts');
        assertEqual((await client.listResources()).resources.map((r) => r.uri), ['calid://bookings/upcoming'], 'resources');
        for (const name of ['create_booking', 'get_users_me']) {
            const e = await rejects(client.callTool({ name, arguments: {} }), `callTool(${name})`);
            assertEqual(e.code, -32602, `error code for ${name}`);
        }
        await client.close();
    });

    test(`${way}: /mcp?toolsets=slots,event-types narrows the list for this client`, async (ctx) => {
        const { client } = await WAYS[way](ctx, `${ctx.server.url}?toolsets=slots,event-types`);
        cleanup(() => client.close());
        const names = (await client.listTools()).tools.map((t) => t.name);
        assertEqual(names.length, 10, `tools of slots and event-types: ${names}`);
        assert(names.includes('get_slots') && names.includes('create_eventtype') && !names.includes('create_booking'), `tools: ${names}`);
        assertEqual((await client.listPrompts()).prompts.map((p) => p.name).sort(), ['create_event_type', 'free_slots_on_day'], 'prompts');
        await client.close();
    });
}

run('test_features_sdk: prompts, resources, completions, logging, tool selection through SDK v1 and v2', setup, { totalMs: 120000 });
