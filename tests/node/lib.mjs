// Shared helpers for the client tests in tests/node: start and stop the fake
// Cal ID API and calid-mcp on free loopback ports, talk to the fake's control
// API, and a small sequential test runner whose last line is
// "N passed, N failed" (exit code 1 when anything failed).
//
// Environment:
//   CALID_MCP_BIN     the server binary (default build/calid_mcp)
//   CALID_TEST_CERTS  certificate directory from tests/make_certs.sh (default build/certs)
//   CALID_FAKE_API    the fake API script (default tests/fake_calid.py)
//   CALID_TEST_DEBUG  1: copy the children's stderr to ours
//   CALID_TEST_TRANSPORT  https: calid-mcp serves HTTPS with the test certificate
//                     (run node with NODE_EXTRA_CA_CERTS=$CALID_TEST_CERTS/ca.pem)

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const SERVER_BIN = path.resolve(ROOT, process.env.CALID_MCP_BIN || 'build/calid_mcp');
export const CERTS = path.resolve(ROOT, process.env.CALID_TEST_CERTS || 'build/certs');
export const FAKE_SCRIPT = path.resolve(ROOT, process.env.CALID_FAKE_API || 'tests/fake_calid.py');
const DEBUG = process.env.CALID_TEST_DEBUG === '1';
export const HTTPS = process.env.CALID_TEST_TRANSPORT === 'https';
const SCHEME = HTTPS ? 'https' : 'http';

// ---------------------------------------------------------------------------
// Small utilities

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, message) {
    if (!cond) throw new Error(message || 'assertion failed');
}

export function assertEqual(got, want, what) {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    if (g !== w) throw new Error(`${what || 'value'}: expected ${w}, got ${g}`);
}

/** Resolves with fn's value, or rejects once ms have passed (a hang guard, never a timing assertion). */
export function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`${what || 'operation'} did not finish within ${ms} ms`)), ms);
        }),
    ]).finally(() => clearTimeout(timer));
}

/** Resolves fn's rejection (the error), or throws when fn resolved. */
export async function rejects(promise, what) {
    try {
        const v = await promise;
        throw Object.assign(new Error(`${what || 'call'} should have been rejected, resolved with ${JSON.stringify(v).slice(0, 300)}`), {
            notRejected: true,
        });
    } catch (e) {
        if (e && e.notRejected) throw e;
        return e;
    }
}

/** The 57 tool names the server must list (tests/node/expected-tools.txt, a copy of
 * the second column of shared/calid-tools.tsv; checked against that file when it is
 * beside the repository). */
export function expectedToolNames() {
    const names = readFileSync(path.join(HERE, 'expected-tools.txt'), 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
    for (const tsv of [process.env.CALID_TOOLS_TSV, path.join(ROOT, '..', 'shared', 'calid-tools.tsv')]) {
        if (!tsv || !existsSync(tsv)) continue;
        const fromTsv = readFileSync(tsv, 'utf8').split('\n').slice(1).map((l) => l.split('\t')[1]).filter(Boolean).map((s) => s.trim());
        assertEqual([...fromTsv].sort(), [...names].sort(), `tests/node/expected-tools.txt vs ${tsv}`);
        break;
    }
    return names.sort();
}

/** The JSON text of a tool result's first text item, parsed. */
export function resultJson(result) {
    assert(result && Array.isArray(result.content), `tool result has no content array: ${JSON.stringify(result).slice(0, 300)}`);
    const item = result.content.find((c) => c.type === 'text');
    assert(item, `tool result has no text item: ${JSON.stringify(result).slice(0, 300)}`);
    try {
        return JSON.parse(item.text);
    } catch {
        throw new Error(`tool result text is not JSON: ${item.text.slice(0, 300)}`);
    }
}

export function resultText(result) {
    return (result?.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

/** A header's value from a recorded request, whatever the case of its name. */
export function headerOf(headers, name) {
    if (!headers) return undefined;
    if (Array.isArray(headers)) {
        const h = headers.find((p) => String(p[0]).toLowerCase() === name.toLowerCase());
        return h ? h[1] : undefined;
    }
    for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name.toLowerCase()) return Array.isArray(v) ? v[0] : v;
    return undefined;
}

const normPath = (p) => (p.length > 1 ? p.replace(/\/+$/, '') : p);

// ---------------------------------------------------------------------------
// Processes

const children = new Set();

function track(child, name) {
    children.add(child);
    child.on('exit', () => children.delete(child));
    let log = '';
    const keep = (d) => {
        log += d.toString();
        if (log.length > 20000) log = log.slice(-20000);
        if (DEBUG) process.stderr.write(`[${name}] ${d}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    return () => log;
}

async function stopChild(child) {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const done = await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]);
    if (!done) {
        child.kill('SIGKILL');
        await Promise.race([exited, sleep(2000)]);
    }
}

/** Stops every child these helpers started (only those, by their own handles). */
export async function stopAll() {
    await Promise.all([...children].map(stopChild));
}

/** A free TCP port on 127.0.0.1 (asked of the kernel; the caller retries if it is taken in between). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function canConnect(port) {
    return new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('connect', () => {
            s.destroy();
            resolve(true);
        });
        s.once('error', () => resolve(false));
    });
}

export function ensureCerts() {
    // make_certs.sh is idempotent: it does nothing when the set is complete
    const r = spawnSync('bash', [path.join(ROOT, 'tests', 'make_certs.sh'), CERTS], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tests/make_certs.sh ${CERTS} failed: ${r.stderr || r.stdout}`);
    return { ca: path.join(CERTS, 'ca.pem'), cert: path.join(CERTS, 'server.pem'), key: path.join(CERTS, 'server.key') };
}

// ---------------------------------------------------------------------------
// The fake Cal ID API

/** One HTTPS request to the fake (trusting the test CA). Resolves {status, headers, body, json}. */
function fakeRequest(port, method, p, { token, body } = {}) {
    const ca = readFileSync(path.join(CERTS, 'ca.pem'));
    return new Promise((resolve, reject) => {
        const headers = { Accept: 'application/json' };
        if (token) headers.Authorization = `Bearer ${token}`;
        if (body !== undefined) {
            headers['Content-Type'] = 'application/json';
            headers['Content-Length'] = Buffer.byteLength(body);
        }
        const req = https.request({ host: 'localhost', port, method, path: p, ca, headers, servername: 'localhost', agent: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let json;
                try {
                    json = JSON.parse(text);
                } catch {
                    json = undefined;
                }
                resolve({ status: res.statusCode, headers: res.headers, body: text, json });
            });
        });
        req.setTimeout(10000, () => req.destroy(new Error(`fake API ${method} ${p}: no answer in 10 s`)));
        req.on('error', reject);
        req.end(body);
    });
}

/**
 * Starts tests/fake_calid.py on a free port. Returns
 * { port, url, ca, requests(), reset(), get(path, token), find(method, path), stop() }.
 */
export async function startFake() {
    if (!existsSync(FAKE_SCRIPT)) throw new Error(`the fake Cal ID API ${FAKE_SCRIPT} does not exist (set CALID_FAKE_API)`);
    const certs = ensureCerts();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'calid-fake-'));
    const portFile = path.join(dir, 'port');
    const child = spawn('python3', [FAKE_SCRIPT, '--cert', certs.cert, '--key', certs.key, '--port', '0', '--port-file', portFile], {
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = track(child, 'fake');
    let port;
    for (let i = 0; i < 200 && !port; i++) {
        if (child.exitCode !== null) throw new Error(`the fake API exited with ${child.exitCode}: ${log()}`);
        if (existsSync(portFile)) {
            const t = readFileSync(portFile, 'utf8').trim();
            if (/^\d+$/.test(t) && Number(t) > 0 && (await canConnect(Number(t)))) port = Number(t);
        }
        if (!port) await sleep(50);
    }
    if (!port) {
        await stopChild(child);
        throw new Error(`the fake API wrote no port in 10 s: ${log()}`);
    }
    const fake = {
        port,
        url: `https://localhost:${port}`,
        ca: certs.ca,
        log,
        async requests() {
            const r = await fakeRequest(port, 'GET', '/__fake/requests');
            assert(r.status === 200 && r.json !== undefined, `GET /__fake/requests answered ${r.status}: ${r.body.slice(0, 200)}`);
            const list = Array.isArray(r.json) ? r.json : r.json.requests;
            assert(Array.isArray(list), `GET /__fake/requests is not a list: ${r.body.slice(0, 200)}`);
            return list.filter((q) => !String(q.path || '').startsWith('/__fake/'));
        },
        async reset() {
            const r = await fakeRequest(port, 'POST', '/__fake/reset', { body: '{}' });
            assert(r.status >= 200 && r.status < 300, `POST /__fake/reset answered ${r.status}`);
        },
        /** Adds a fault (see tests/fake_calid.py: {path, method, count, mode, ...}). */
        async fault(spec) {
            const r = await fakeRequest(port, 'POST', '/__fake/fault', { body: JSON.stringify(spec) });
            assert(r.status === 200, `POST /__fake/fault answered ${r.status}: ${r.body.slice(0, 200)}`);
        },
        /** The fake's own answer to a direct request (what a tool result must carry). */
        get(p, token) {
            return fakeRequest(port, 'GET', p, { token });
        },
        /** Recorded requests with this method and path (trailing slashes ignored). */
        async find(method, p) {
            return (await fake.requests()).filter((q) => q.method === method && normPath(String(q.path).split('?')[0]) === normPath(p));
        },
        stop: () => {
            rmSync(dir, { recursive: true, force: true });
            return stopChild(child);
        },
    };
    return fake;
}

// ---------------------------------------------------------------------------
// calid-mcp

/** Arguments and environment that point calid-mcp at the fake. */
export function upstreamArgs(fake) {
    return ['--upstream', fake.url, '--ca-file', fake.ca];
}

export function upstreamEnv(fake) {
    return { CALID_API_BASE: fake.url, CALID_CA_FILE: fake.ca };
}

/**
 * Starts calid-mcp over HTTP (HTTPS with CALID_TEST_TRANSPORT=https) on a free 127.0.0.1 port.
 * opts: { fake, apiKey, args: [...] }. Returns { port, url, origin, log(), stop() }.
 */
export async function startServer(opts = {}) {
    if (!existsSync(SERVER_BIN)) throw new Error(`${SERVER_BIN} does not exist (make build/calid_mcp)`);
    const tls = HTTPS ? ['--tls-cert', ensureCerts().cert, '--tls-key', ensureCerts().key] : [];
    const extra = [...(opts.fake ? upstreamArgs(opts.fake) : []), ...(opts.apiKey ? ['--api-key', opts.apiKey] : []), ...tls, ...(opts.args || [])];
    let lastLog = '';
    for (let attempt = 0; attempt < 5; attempt++) {
        const port = await freePort();
        const env = { ...process.env };
        // the server reads these too: keep the caller's environment out of the way
        for (const k of ['CALID_API_KEY', 'CALID_MCP_ACCESS_TOKEN', 'CALID_MCP_LISTEN', 'CALID_API_BASE', 'CALID_CA_FILE', 'CALID_MCP_TLS_CERT', 'CALID_MCP_TLS_KEY']) delete env[k];
        const child = spawn(SERVER_BIN, ['--listen', `127.0.0.1:${port}`, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env });
        const log = track(child, 'calid_mcp');
        let up = false;
        for (let i = 0; i < 200 && !up && child.exitCode === null; i++) {
            up = await canConnect(port);
            if (!up) await sleep(50);
        }
        if (up && child.exitCode === null) {
            return {
                port,
                url: `${SCHEME}://127.0.0.1:${port}/mcp`,
                origin: `${SCHEME}://127.0.0.1:${port}`,
                log,
                child,
                stop: () => stopChild(child),
            };
        }
        lastLog = log();
        await stopChild(child);
        if (!/in use|EADDRINUSE|bind/i.test(lastLog)) break; // a real failure, not a port race
    }
    throw new Error(`calid-mcp did not start: ${lastLog}`);
}

/** Environment for `calid_mcp --stdio` against the fake (the key comes from CALID_API_KEY). */
export function stdioEnv(fake, apiKey, base = {}) {
    return { ...base, CALID_API_KEY: apiKey, ...upstreamEnv(fake) };
}

// ---------------------------------------------------------------------------
// The runner

const tests = [];
const cleanups = [];

/** Registers a test; tests run in order. */
export function test(name, fn, { timeoutMs = 25000 } = {}) {
    tests.push({ name, fn, timeoutMs });
}

/** Registers a function to run after all tests (in reverse order). */
export function cleanup(fn) {
    cleanups.push(fn);
}

/** Runs the registered cleanups (last first), then stops every child still running. */
export async function runCleanups() {
    for (const fn of cleanups.splice(0).reverse()) {
        try {
            await withTimeout(Promise.resolve().then(fn), 8000, 'cleanup');
        } catch (e) {
            console.log(`# cleanup: ${e && e.message ? e.message : e}`);
        }
    }
    await stopAll();
}

/**
 * Runs the registered tests one after another. setup (optional) runs first;
 * if it throws, every test counts as failed. Prints "ok - name" or
 * "not ok - name: why" for each, then "N passed, N failed", and sets the exit code.
 */
export async function run(suite, setup, { totalMs = 55000 } = {}) {
    let passed = 0, failed = 0, finished = false;
    const watchdog = setTimeout(async () => {
        if (finished) return;
        console.log(`not ok - ${suite}: the suite did not finish within ${totalMs} ms; stopping`);
        console.log(`${passed} passed, ${failed + 1} failed`);
        await stopAll();
        process.exit(1);
    }, totalMs);
    console.log(`# ${suite}`);
    let ctx = {};
    let setupError;
    if (setup) {
        try {
            ctx = (await withTimeout(Promise.resolve().then(() => setup()), 20000, 'setup')) || {};
        } catch (e) {
            setupError = e;
            console.log(`not ok - setup: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
        }
    }
    for (const t of tests) {
        if (setupError) {
            failed++;
            console.log(`not ok - ${t.name}: setup failed`);
            continue;
        }
        try {
            await withTimeout(Promise.resolve().then(() => t.fn(ctx)), t.timeoutMs, t.name);
            passed++;
            console.log(`ok - ${t.name}`);
        } catch (e) {
            failed++;
            const why = e && e.message ? e.message : String(e);
            console.log(`not ok - ${t.name}: ${why.replace(/\s+/g, ' ').slice(0, 1500)}`);
            if (DEBUG && e && e.stack) console.log(e.stack);
        }
    }
    await runCleanups();
    finished = true;
    clearTimeout(watchdog);
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
    // SDK transports can leave sockets or timers behind: do not wait for them
    setTimeout(() => process.exit(process.exitCode), 200).unref();
}

process.on('SIGINT', async () => {
    await stopAll();
    process.exit(130);
});
