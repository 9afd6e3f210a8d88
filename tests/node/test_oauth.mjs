// calid-mcp's OAuth 2.1 sign-in driven end to end by the v1 SDK client
// (@modelcontextprotocol/sdk 1.32: OAuthClientProvider + auth()) over HTTPS
// with the test CA: discovery from the 401, dynamic registration, the consent
// form filled as a browser would (GET /authorize, POST the form), the code
// exchanged, a tool call that reaches the fake API with the user's key, a
// refresh, a second instance with the same secret file accepting the same
// token, and the refusals.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import {
    ROOT, SERVER_BIN, assert, assertEqual, cleanup, ensureCerts, freePort, headerOf, rejects, resultJson, run, sleep, startFake,
    test, upstreamArgs,
} from './lib.mjs';

// Node's fetch trusts the test CA only when told at start, and Node 20 has a
// WebSocket (for Chromium's DevTools protocol) only behind a flag: run again so.
const certs = ensureCerts();
if (process.env.NODE_EXTRA_CA_CERTS !== certs.ca) {
    const flags = typeof WebSocket === 'undefined' ? ['--experimental-websocket', '--no-warnings'] : [];
    const r = spawnSync(process.execPath, [...flags, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
        stdio: 'inherit',
        env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.ca },
    });
    process.exit(r.status ?? 1);
}

const USER_KEY = 'calid_oauth_user_key_42';
const REDIRECT = 'http://127.0.0.1:1/oauth/callback'; // never opened: the "browser" below stops at the redirect
const clientInfo = { name: 'calid-mcp-tests-oauth', version: '1.0.0' };
const dir = mkdtempSync(path.join(os.tmpdir(), 'calid-oauth-'));
const SECRET = path.join(dir, 'secret');

/** calid-mcp over HTTPS with --oauth, its --public-url naming its own port unless given. */
async function startOAuthServer(fake, { publicUrl, secret = SECRET } = {}) {
    const port = await freePort();
    const pub = publicUrl || `https://127.0.0.1:${port}`;
    const args = ['--listen', `127.0.0.1:${port}`, '--tls-cert', certs.cert, '--tls-key', certs.key, '--oauth',
        '--public-url', pub, '--secret-file', secret, ...upstreamArgs(fake)];
    const child = spawn(SERVER_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => { log += d; if (process.env.CALID_TEST_DEBUG === '1') process.stderr.write(`[calid_mcp] ${d}`); });
    const stop = () => new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        child.kill('SIGTERM');
    });
    cleanup(stop);
    for (let i = 0; i < 100; i++) {
        if (child.exitCode !== null) throw new Error(`calid-mcp exited ${child.exitCode}: ${log}`);
        try {
            const r = await fetch(`https://127.0.0.1:${port}/healthz`);
            if (r.ok) break;
        } catch {
            await sleep(50);
        }
    }
    return { port, base: `https://127.0.0.1:${port}`, url: `https://127.0.0.1:${port}/mcp`, publicUrl: pub, log: () => log, stop };
}

/** An OAuthClientProvider that keeps everything in memory and records the redirect it was asked to open. */
class MemoryProvider {
    constructor() {
        this.client = undefined;
        this.saved = undefined;
        this.verifier = undefined;
        this.authUrl = undefined;
    }
    get redirectUrl() { return REDIRECT; }
    get clientMetadata() {
        return { client_name: 'SDK test client', redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'], token_endpoint_auth_method: 'none' };
    }
    state() { return 'state-from-the-sdk'; }
    clientInformation() { return this.client; }
    saveClientInformation(c) { this.client = c; }
    tokens() { return this.saved; }
    saveTokens(t) { this.saved = t; }
    redirectToAuthorization(url) { this.authUrl = url; }
    saveCodeVerifier(v) { this.verifier = v; }
    codeVerifier() { return this.verifier; }
}

/** What a person's browser does with the sign-in URL: GET the page, fill the key in, POST the form. */
async function browserSignIn(authUrl, key) {
    const page = await fetch(authUrl, { redirect: 'manual' });
    const html = await page.text();
    assertEqual(page.status, 200, `consent page status (${html.slice(0, 300)})`);
    assert(/<title>Sign in to Cal ID: SDK test client<\/title>/.test(html), 'the consent page names the client');
    const form = new URLSearchParams();
    for (const m of html.matchAll(/<input type="hidden" name="([a-z_]+)" value="([^"]*)">/g))
        form.append(m[1], m[2].replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&'));
    form.append('api_key', key);
    form.append('action', 'allow');
    const action = new URL(html.match(/<form method="post" action="([^"]+)">/)[1], authUrl);
    const r = await fetch(action, { method: 'POST', redirect: 'manual', body: form,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: action.origin } });
    return { status: r.status, location: r.headers.get('location'), text: await r.text() };
}

async function connect(url, provider) {
    const client = new Client(clientInfo);
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    await client.connect(transport);
    cleanup(() => client.close());
    return client;
}

async function tokenRequest(base, fields) {
    const r = await fetch(`${base}/token`, { method: 'POST', body: new URLSearchParams(fields),
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    return { status: r.status, json: await r.json() };
}

/** The reason the fake API itself gives for refusing this key (the page must quote it). */
async function apiReason(fake, key) {
    const r = await fake.get('/users/me', key);
    assertEqual(r.status, 401, `the fake's answer to key ${key}`);
    const m = r.json?.message ?? r.json?.error?.message;
    assert(typeof m === 'string' && m.length > 0, `the fake gave no reason: ${r.body.slice(0, 200)}`);
    return m;
}

async function callMe(client) {
    const res = await client.callTool({ name: 'get_users_me', arguments: {} });
    assert(res.isError !== true, `get_users_me failed: ${JSON.stringify(res).slice(0, 300)}`);
    return resultJson(res);
}

async function setup() {
    const fake = await startFake();
    cleanup(() => fake.stop());
    cleanup(() => rmSync(dir, { recursive: true, force: true }));
    const server = await startOAuthServer(fake);
    return { fake, server, provider: new MemoryProvider() };
}

let firstAccess; // the access token of the first sign-in

test('sign-in: discovery, registration and the redirect to the consent page', async ({ server, provider }) => {
    const client = new Client(clientInfo);
    const transport = new StreamableHTTPClientTransport(new URL(server.url), { authProvider: provider });
    const e = await rejects(client.connect(transport), 'connect before signing in');
    assert(e instanceof UnauthorizedError, `expected UnauthorizedError, got ${e}`);
    assert(provider.client && provider.client.client_id.startsWith('cmcl_'), 'the SDK registered a client');
    const u = new URL(provider.authUrl);
    assertEqual(`${u.origin}${u.pathname}`, `${server.base}/authorize`, 'authorization endpoint');
    assertEqual(u.searchParams.get('code_challenge_method'), 'S256', 'PKCE method');
    assertEqual(u.searchParams.get('resource'), server.url, 'resource indicator');
    provider.transport = transport;
});

test('sign-in: a wrong key shows the page again with the API\'s reason', async ({ provider, fake }) => {
    const r = await browserSignIn(provider.authUrl, 'not_a_calid_key');
    assertEqual(r.status, 401, 'status');
    const reason = await apiReason(fake, 'not_a_calid_key');
    assert(r.text.includes(`Cal ID did not accept this key: ${reason}`), r.text.slice(0, 600));
    assert(!r.text.includes('not_a_calid_key'), 'the page repeats the key');
    assertEqual((await fake.find('GET', '/users/me')).length, 2, 'the key was checked with one API call (and the test asked once)');
});

test('sign-in: the consent form, the code exchanged by the SDK', async ({ provider, fake }) => {
    const r = await browserSignIn(provider.authUrl, USER_KEY);
    assertEqual(r.status, 303, `status (${r.text.slice(0, 200)})`);
    const loc = new URL(r.location);
    assertEqual(`${loc.origin}${loc.pathname}`, REDIRECT, 'back to the redirect URI');
    assertEqual(loc.searchParams.get('state'), 'state-from-the-sdk', 'state comes back unchanged');
    assert(!r.location.includes(USER_KEY), 'the key is in the URL');
    const checks = await fake.find('GET', '/users/me');
    assertEqual(headerOf(checks[checks.length - 1].headers, 'authorization'), `Bearer ${USER_KEY}`, 'the key check');
    await provider.transport.finishAuth(loc.searchParams.get('code'));
    assert(provider.saved.access_token.startsWith('cmat_') && provider.saved.refresh_token.startsWith('cmrt_'), 'tokens saved');
    assertEqual(provider.saved.expires_in, 3600, 'expires_in');
    assert(!provider.saved.access_token.includes(USER_KEY), 'the key is in the token in clear');
    firstAccess = provider.saved.access_token;
});

test('a tool call reaches the API with the user\'s key', async ({ server, provider, fake }) => {
    await fake.reset();
    const client = await connect(server.url, provider);
    const me = await callMe(client);
    assert(me && me.data, `get_users_me: ${JSON.stringify(me).slice(0, 200)}`);
    const hits = await fake.find('GET', '/users/me');
    assertEqual(hits.length, 1, 'one API request');
    assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${USER_KEY}`, 'Authorization sent to the API');
});

test('refresh: auth() trades the refresh token for new ones, and the old one is refused', async ({ server, provider }) => {
    const before = provider.saved;
    const result = await auth(provider, { serverUrl: new URL(server.url) });
    assertEqual(result, 'AUTHORIZED', 'auth() result');
    assert(provider.saved.refresh_token !== before.refresh_token && provider.saved.access_token !== before.access_token, 'rotated');
    const client = await connect(server.url, provider);
    await callMe(client);
    const again = await tokenRequest(server.base, { grant_type: 'refresh_token', refresh_token: before.refresh_token,
        client_id: provider.client.client_id });
    assertEqual([again.status, again.json.error], [400, 'invalid_grant'], 'reusing a rotated refresh token');
});

test('a second instance with the same secret file accepts the same token', async ({ server, provider, fake }) => {
    const second = await startOAuthServer(fake, { publicUrl: server.publicUrl });
    await fake.reset();
    const client = await connect(second.url, provider);
    await callMe(client);
    const hits = await fake.find('GET', '/users/me');
    assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${USER_KEY}`, 'the key reached the API through the second instance');
    await second.stop();
    const other = await startOAuthServer(fake, { secret: path.join(dir, 'other-secret') });
    const r = await fetch(other.url, { method: 'POST', body: '{}', headers: { Authorization: `Bearer ${firstAccess}`, 'Content-Type': 'application/json' } });
    assertEqual(r.status, 401, 'another secret refuses the token');
    assert(/error="invalid_token"/.test(r.headers.get('www-authenticate')), r.headers.get('www-authenticate'));
    await other.stop();
});

test('refusals: tampered token, reused code, wrong verifier', async ({ server, provider }) => {
    const t = provider.saved.access_token;
    const tampered = t.slice(0, 30) + (t[30] === 'A' ? 'B' : 'A') + t.slice(31);
    const r = await fetch(server.url, { method: 'POST', body: '{}', headers: { Authorization: `Bearer ${tampered}`, 'Content-Type': 'application/json' } });
    assertEqual(r.status, 401, 'tampered token');
    // a fresh code, by hand
    const p2 = new MemoryProvider();
    p2.client = provider.client;
    await auth(p2, { serverUrl: new URL(server.url) });
    const r2 = await browserSignIn(p2.authUrl, USER_KEY);
    const code = new URL(r2.location).searchParams.get('code');
    const base = { grant_type: 'authorization_code', code, client_id: p2.client.client_id, redirect_uri: REDIRECT, resource: server.url };
    const wrong = await tokenRequest(server.base, { ...base, code_verifier: 'w'.repeat(43) });
    assertEqual([wrong.status, wrong.json.error], [400, 'invalid_grant'], 'wrong verifier');
    const good = await tokenRequest(server.base, { ...base, code_verifier: p2.verifier });
    assertEqual(good.status, 200, 'the right verifier');
    const reused = await tokenRequest(server.base, { ...base, code_verifier: p2.verifier });
    assertEqual([reused.status, reused.json.error], [400, 'invalid_grant'], 'reused code');
});

// ---------------------------------------------------------------- a real browser

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = path.join(ROOT, process.env.BUILD || 'build', 'screenshots');

/** Headless Chromium driven over its DevTools protocol: { send(method, params), next(pred), close() }. */
async function launchChromium() {
    const profile = mkdtempSync(path.join(dir, 'chromium-'));
    const child = spawn(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`,
        '--remote-debugging-port=0', '--remote-allow-origins=*', '--ignore-certificate-errors', '--window-size=390,844',
        '--hide-scrollbars', 'about:blank'], { stdio: ['ignore', 'ignore', 'ignore'] });
    const close = () => new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', resolve);
        child.kill('SIGTERM');
    });
    cleanup(close);
    const portFile = path.join(profile, 'DevToolsActivePort');
    for (let i = 0; i < 300 && !existsSync(portFile); i++) await sleep(50);
    const devtoolsPort = Number(readFileSync(portFile, 'utf8').split('\n')[0]);
    const targets = await (await fetch(`http://127.0.0.1:${devtoolsPort}/json/list`)).json();
    const ws = new WebSocket(targets.find((t) => t.type === 'page').webSocketDebuggerUrl);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    let seq = 0;
    const pending = new Map(), waiters = [];
    ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.id && pending.has(m.id)) {
            const p = pending.get(m.id);
            pending.delete(m.id);
            if (m.error) p.reject(new Error(`${p.method}: ${m.error.message}`));
            else p.resolve(m.result);
            return;
        }
        for (const w of [...waiters]) if (w.pred(m)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(m);
        }
    };
    return {
        send: (method, params = {}) => new Promise((resolve, reject) => {
            pending.set(++seq, { resolve, reject, method });
            ws.send(JSON.stringify({ id: seq, method, params }));
        }),
        next: (pred) => new Promise((resolve) => waiters.push({ pred, resolve })),
        close: async () => { ws.close(); await close(); },
    };
}

async function screenshot(b, name) {
    const { data } = await b.send('Page.captureScreenshot', { format: 'png' });
    mkdirSync(SHOTS, { recursive: true });
    writeFileSync(path.join(SHOTS, name), Buffer.from(data, 'base64'));
}

test('a real browser fills in the consent form: a wrong key, then the right one', async ({ server, provider, fake }) => {
    if (!existsSync(CHROMIUM)) return console.log('# chromium is not installed: skipped');
    const p = new MemoryProvider();
    p.client = provider.client;
    await auth(p, { serverUrl: new URL(server.url) });
    const b = await launchChromium();
    await b.send('Page.enable');
    await b.send('Network.enable');
    await b.send('Emulation.setDeviceMetricsOverride', { width: 390, height: 844, deviceScaleFactor: 1, mobile: true });
    const text = async () => (await b.send('Runtime.evaluate', { expression: 'document.title + "\\n" + document.body.innerText' })).result.value;
    const submit = (key) => b.send('Runtime.evaluate', { expression:
        `document.getElementById('api_key').value = ${JSON.stringify(key)}; document.querySelector('button[value=allow]').click(); true` });
    let loaded = b.next((m) => m.method === 'Page.loadEventFired');
    await b.send('Page.navigate', { url: p.authUrl });
    await loaded;
    assert((await text()).startsWith('Sign in to Cal ID: SDK test client'), await text());
    loaded = b.next((m) => m.method === 'Page.loadEventFired');
    await submit('calid wrong key');
    await loaded;
    assert((await text()).includes('That is not a Cal ID API key'), `after a malformed key: ${await text()}`);
    loaded = b.next((m) => m.method === 'Page.loadEventFired');
    await submit('refused_by_the_api');
    await loaded;
    const page = await text();
    assert(page.includes(`Cal ID did not accept this key: ${await apiReason(fake, 'refused_by_the_api')}`), page);
    assert(!page.includes('refused_by_the_api'), 'the page shows the key');
    await screenshot(b, 'consent-wrong-key-phone-https.png');
    const back = b.next((m) => m.method === 'Network.requestWillBeSent' && m.params.request.url.startsWith(REDIRECT));
    await submit(USER_KEY);
    const loc = new URL((await back).params.request.url);
    assertEqual(loc.searchParams.get('state'), 'state-from-the-sdk', 'state after the browser');
    await b.close();
    const transport = new StreamableHTTPClientTransport(new URL(server.url), { authProvider: p });
    await transport.finishAuth(loc.searchParams.get('code'));
    await fake.reset();
    const client = await connect(server.url, p);
    await callMe(client);
    const hits = await fake.find('GET', '/users/me');
    assertEqual(headerOf(hits[0].headers, 'authorization'), `Bearer ${USER_KEY}`, 'the key typed in the browser reached the API');
}, { timeoutMs: 60000 });

test('the key never reaches the log', async ({ server }) => {
    await sleep(100);
    assert(!server.log().includes(USER_KEY), 'the key is in the server log');
});

run('calid-mcp OAuth sign-in with the v1 SDK client over HTTPS', setup, { totalMs: 150000 });
