// The official MCP conformance suite (@modelcontextprotocol/conformance) runs
// every one of its server scenarios (--suite all) against calid-mcp. The suite
// needs Node 22: it runs under the binary of the `node` npm package
// (node_modules/node/bin/node), while this file runs under the machine's node.
//
// calid-mcp starts with --api-key calid_conformance and the fake Cal ID API as
// its upstream, so the suite needs no Authorization header.
//
// One line per scenario, then "N passed, N failed". A scenario passes when none
// of its checks is FAILURE or WARNING (the rule the suite's own
// --expected-failures uses). A failing scenario counts as passed only when
// conformance-baseline.yml lists it; a listed scenario that passes is reported
// (remove it from the baseline) but not counted as a failure.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HERE, assert, cleanup, runCleanups, startFake, startServer, withTimeout } from './lib.mjs';

const NODE22 = process.env.CALID_NODE22 || path.join(HERE, 'node_modules', 'node', 'bin', 'node');
const CLI = path.join(HERE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const BASELINE = path.join(HERE, 'conformance-baseline.yml');
const MUST_PASS = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'];

/** Runs the suite's CLI under Node 22. Resolves { code, out }. */
function conformance(args, ms) {
    return withTimeout(
        new Promise((resolve, reject) => {
            const child = spawn(NODE22, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
            let out = '';
            child.stdout.on('data', (d) => (out += d));
            child.stderr.on('data', (d) => (out += d));
            child.on('error', reject);
            child.on('exit', (code, signal) => resolve({ code: code ?? signal, out }));
            cleanup(() => child.exitCode === null && child.kill('SIGKILL'));
        }),
        ms,
        `conformance ${args[0]}`,
    );
}

/** conformance-baseline.yml: the `server:` list, each entry with its reason after '#'. */
function readBaseline() {
    const entries = new Map();
    let inServer = false;
    for (const line of readFileSync(BASELINE, 'utf8').split('\n')) {
        if (/^\S/.test(line)) inServer = /^server:\s*(#.*)?$/.test(line);
        const m = line.match(/^\s+-\s+([A-Za-z0-9_./-]+)\s*(?:#\s*(.*))?$/);
        if (inServer && m) entries.set(m[1], (m[2] || '').trim());
    }
    return entries;
}

/** The checks.json the suite wrote for each scenario, by scenario name. */
function readResults(dir, scenarios) {
    const dirs = readdirSync(dir);
    const out = new Map();
    for (const s of scenarios) {
        const esc = s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        const re = new RegExp(`^server-${esc}-\\d{4}-\\d\\d-\\d\\dT`);
        const d = dirs.filter((x) => re.test(x)).sort().pop();
        if (!d) continue;
        try {
            out.set(s, JSON.parse(readFileSync(path.join(dir, d, 'checks.json'), 'utf8')));
        } catch (e) {
            out.set(s, [{ id: s, status: 'FAILURE', errorMessage: `unreadable checks.json: ${e.message}` }]);
        }
    }
    return out;
}

const brief = (c) => `${c.id}: ${String(c.errorMessage || c.description || '').replace(/\s+/g, ' ').slice(0, 300)}`;

async function main() {
    let passed = 0, failed = 0;
    const fail = (line) => {
        failed++;
        console.log(`not ok - ${line}`);
    };
    const pass = (line) => {
        passed++;
        console.log(`ok - ${line}`);
    };
    let outDir;
    let keep = false;
    try {
        assert(existsSync(NODE22), `${NODE22} is missing: run npm ci in tests/node (the node@22 package)`);
        assert(existsSync(CLI), `${CLI} is missing: run npm ci in tests/node`);
        const v = await conformance(['--version'], 15000);
        const nodeVersion = await withTimeout(
            new Promise((resolve) => {
                const c = spawn(NODE22, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
                let o = '';
                c.stdout.on('data', (d) => (o += d));
                c.on('exit', () => resolve(o.trim()));
            }),
            15000,
            'node --version',
        );
        assert(/^v22\./.test(nodeVersion), `${NODE22} is ${nodeVersion}, not Node 22`);
        console.log(`# conformance ${v.out.trim()} under node ${nodeVersion}`);

        const listed = await conformance(['list', '--server'], 15000);
        const scenarios = [...listed.out.matchAll(/^\s+-\s+([a-z0-9][a-z0-9-]*)\b/gm)].map((m) => m[1]);
        assert(scenarios.length > 0, `no server scenarios listed: ${listed.out.slice(0, 500)}`);
        const baseline = readBaseline();
        for (const [s, reason] of baseline) {
            if (!reason) fail(`baseline entry ${s} has no reason ('# why' after the name)`);
            if (!scenarios.includes(s)) console.log(`# note: baseline entry ${s} is not a server scenario of this suite version`);
        }
        for (const s of MUST_PASS) {
            if (!scenarios.includes(s)) fail(`scenario ${s} is not in this suite version (it must run and pass)`);
            if (baseline.has(s)) fail(`scenario ${s} must pass and may not be in the baseline`);
        }

        const fake = await startFake();
        cleanup(() => fake.stop());
        const server = await startServer({ fake, apiKey: 'calid_conformance' });
        cleanup(() => server.stop());

        outDir = mkdtempSync(path.join(os.tmpdir(), 'calid-conformance-'));
        const run = await conformance(['server', '--url', server.url, '--suite', 'all', '-o', outDir], 45000);
        const results = readResults(outDir, scenarios);
        for (const s of scenarios) {
            const checks = results.get(s);
            const inBaseline = baseline.has(s);
            if (!checks) {
                keep = true;
                fail(`${s}: the suite wrote no result (exit ${run.code})`);
                continue;
            }
            const bad = checks.filter((c) => c.status === 'FAILURE' || c.status === 'WARNING');
            const ok = checks.filter((c) => c.status === 'SUCCESS').length;
            if (bad.length === 0) {
                const info = ok === 0 ? ' (informational checks only)' : '';
                if (inBaseline) pass(`${s}: passes but is in the baseline: remove it from conformance-baseline.yml${info}`);
                else pass(`${s}: ${ok} checks passed${info}`);
            } else if (inBaseline) {
                pass(`${s}: expected failure (baseline: ${baseline.get(s)}) [${brief(bad[0])}]`);
            } else {
                keep = true;
                fail(`${s}: ${bad.map(brief).join(' | ')}`);
            }
        }
        if (keep) console.log(`# the suite's results are kept in ${outDir}`);
    } catch (e) {
        keep = true;
        fail(`conformance run: ${e && e.message ? e.message : e}`);
    } finally {
        await runCleanups();
        if (outDir && !keep) rmSync(outDir, { recursive: true, force: true });
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
    setTimeout(() => process.exit(process.exitCode), 200).unref();
}

main();
