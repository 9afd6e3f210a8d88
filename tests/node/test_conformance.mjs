// The official MCP conformance suite (@modelcontextprotocol/conformance)
// against calid-mcp, three runs:
//   - 0.1.16, every server scenario (--suite all), baseline conformance-baseline.yml;
//   - 0.2.0-alpha.12 (installed as mcp-conformance-next), the scenarios each
//     revision requires, frozen at its release: --requirements 2026-07-28
//     (conformance-baseline-2026-07-28.yml) and --requirements 2025-11-25
//     (conformance-baseline-2025-11-25.yml).
// The suite needs Node 22: it runs under the binary of the `node` npm package
// (node_modules/node/bin/node), while this file runs under the machine's node.
//
// calid-mcp starts with --api-key calid_conformance and the fake Cal ID API as
// its upstream, so the suite needs no Authorization header.
//
// One line per scenario, then "N passed, N failed". A scenario passes when none
// of its checks is FAILURE or WARNING (the rule the suite's own
// --expected-failures uses). A failing scenario counts as passed only when its
// baseline lists it (each entry with its reason); a listed scenario that
// passes is a failure too, so the baseline never hides progress.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HERE, assert, cleanup, runCleanups, startFake, startServer, withTimeout } from './lib.mjs';

const NODE22 = process.env.CALID_NODE22 || path.join(HERE, 'node_modules', 'node', 'bin', 'node');
const CLI_01 = path.join(HERE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const CLI_02 = path.join(HERE, 'node_modules', 'mcp-conformance-next', 'dist', 'index.js');

/** The three runs: which CLI, how its scenarios are listed and run, which baseline. */
const RUNS = [
    {
        label: '0.1.16 all',
        cli: CLI_01,
        list: ['list', '--server'],
        run: ['--suite', 'all'],
        baseline: 'conformance-baseline.yml',
        mustPass: ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection', 'logging-set-level',
                   'resources-list', 'prompts-list'],
    },
    {
        label: '0.2 2026-07-28',
        cli: CLI_02,
        list: ['list', '--requirements', '2026-07-28'],
        run: ['--requirements', '2026-07-28'],
        baseline: 'conformance-baseline-2026-07-28.yml',
        mustPass: ['tools-list', 'dns-rebinding-protection', 'resources-list', 'prompts-list', 'caching',
                   'sep-2164-resource-not-found'],
    },
    {
        label: '0.2 2025-11-25',
        cli: CLI_02,
        list: ['list', '--requirements', '2025-11-25'],
        run: ['--requirements', '2025-11-25'],
        baseline: 'conformance-baseline-2025-11-25.yml',
        mustPass: ['server-initialize', 'ping', 'tools-list', 'logging-set-level', 'resources-list', 'prompts-list',
                   'dns-rebinding-protection'],
    },
];

/** Runs a suite CLI under Node 22. Resolves { code, out }. */
function conformance(cli, args, ms) {
    return withTimeout(
        new Promise((resolve, reject) => {
            const child = spawn(NODE22, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
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

/** A baseline file: the `server:` list, each entry with its reason after '#'. */
function readBaseline(file) {
    const entries = new Map();
    let inServer = false;
    for (const line of readFileSync(path.join(HERE, file), 'utf8').split('\n')) {
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

/** The server scenarios a `list` answer names (the "Server scenarios" part only). */
function listedScenarios(out) {
    const part = out.includes('Server scenarios') ? out.split('Server scenarios')[1].split(/\n\s*\n/)[0] : out;
    return [...part.matchAll(/^\s+-\s+([a-z0-9][a-z0-9-]*)\b/gm)].map((m) => m[1]);
}

/** One run of a suite against the server; counts through pass/fail. Returns true to keep its output. */
async function runOne(r, server, pass, fail) {
    const v = await conformance(r.cli, ['--version'], 15000);
    console.log(`# ${r.label}: conformance ${v.out.trim()}`);
    const listed = await conformance(r.cli, r.list, 15000);
    const scenarios = listedScenarios(listed.out);
    assert(scenarios.length > 0, `${r.label}: no server scenarios listed: ${listed.out.slice(0, 500)}`);
    const baseline = readBaseline(r.baseline);
    for (const [s, reason] of baseline) {
        if (!reason) fail(`${r.label}: baseline entry ${s} has no reason ('# why' after the name)`);
        if (!scenarios.includes(s)) fail(`${r.label}: baseline entry ${s} is not a scenario of this run (remove it)`);
    }
    for (const s of r.mustPass) {
        if (!scenarios.includes(s)) fail(`${r.label}: scenario ${s} is not in this run (it must run and pass)`);
        if (baseline.has(s)) fail(`${r.label}: scenario ${s} must pass and may not be in the baseline`);
    }
    const outDir = mkdtempSync(path.join(os.tmpdir(), 'calid-conformance-'));
    const run = await conformance(r.cli, ['server', '--url', server.url, ...r.run, '-o', outDir], 300000);
    const results = readResults(outDir, scenarios);
    let keep = false;
    for (const s of scenarios) {
        const checks = results.get(s);
        const inBaseline = baseline.has(s);
        if (!checks) {
            keep = true;
            fail(`${r.label}: ${s}: the suite wrote no result (exit ${run.code})`);
            continue;
        }
        const bad = checks.filter((c) => c.status === 'FAILURE' || c.status === 'WARNING');
        const ok = checks.filter((c) => c.status === 'SUCCESS').length;
        if (bad.length === 0) {
            const info = ok === 0 ? ' (informational checks only)' : '';
            if (inBaseline) {
                keep = true;
                fail(`${r.label}: ${s}: passes but is in the baseline: remove it from ${r.baseline}${info}`);
            } else pass(`${r.label}: ${s}: ${ok} checks passed${info}`);
        } else if (inBaseline) {
            pass(`${r.label}: ${s}: expected failure (baseline: ${baseline.get(s)}) [${brief(bad[0])}]`);
        } else {
            keep = true;
            fail(`${r.label}: ${s}: ${bad.map(brief).join(' | ')}`);
        }
    }
    if (keep) console.log(`# ${r.label}: the suite's results are kept in ${outDir}`);
    else rmSync(outDir, { recursive: true, force: true });
}

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
    try {
        assert(existsSync(NODE22), `${NODE22} is missing: run npm ci in tests/node (the node@22 package)`);
        for (const cli of [CLI_01, CLI_02]) assert(existsSync(cli), `${cli} is missing: run npm ci in tests/node`);
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
        console.log(`# suites under node ${nodeVersion}`);
        const fake = await startFake();
        cleanup(() => fake.stop());
        const server = await startServer({ fake, apiKey: 'calid_conformance' });
        cleanup(() => server.stop());
        for (const r of RUNS) {
            try {
                await runOne(r, server, pass, fail);
            } catch (e) {
                fail(`${r.label}: ${e && e.message ? e.message : e}`);
            }
        }
    } catch (e) {
        fail(`conformance run: ${e && e.message ? e.message : e}`);
    } finally {
        await runCleanups();
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exitCode = failed ? 1 : 0;
    setTimeout(() => process.exit(process.exitCode), 200).unref();
}

main();
