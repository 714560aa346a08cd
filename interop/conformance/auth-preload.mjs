// `node --import ./auth-preload.mjs conformance server --url URL ...`
//
// The conformance suite's server mode sends no Authorization header, and Warden wants
// `Authorization: Bearer <key>`. This preload adds `Authorization: Bearer $WARDEN_KEY` to every
// request the suite makes to the origin of its --url, and to nothing else (the key must not
// leak elsewhere). The suite (0.1.16) reaches the server through two HTTP clients:
//   - global fetch: the SDK's StreamableHTTPClientTransport and the raw POST/GET probes of the
//     server-sse-* scenarios;
//   - undici's request(): the dns-rebinding-protection scenario, which forges Host/Origin.
// An Authorization header already present is left alone.
import { createRequire } from 'node:module';

const key = process.env.WARDEN_KEY;
if (!key) throw new Error('auth-preload: set WARDEN_KEY');

// The target is the suite's own --url argument, so the preload cannot disagree with it.
const argv = process.argv;
const at = argv.findIndex((a) => a === '--url' || a.startsWith('--url='));
const url = at === -1 ? undefined : argv[at].startsWith('--url=') ? argv[at].slice(6) : argv[at + 1];
if (!url) throw new Error('auth-preload: no --url argument to take the target origin from');
const target = new URL(url).origin;
const bearer = `Bearer ${key}`;

const isTarget = (u) => {
    try {
        return new URL(String(u)).origin === target;
    } catch {
        return false;
    }
};

const originalFetch = globalThis.fetch;
globalThis.fetch = function fetchWithAuth(input, init) {
    const u = input instanceof Request ? input.url : input instanceof URL ? input.href : input;
    if (!isTarget(u)) return originalFetch(input, init);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    if (!headers.has('authorization')) headers.set('authorization', bearer);
    return originalFetch(input, { ...init, headers });
};

// Patch the very undici instance the suite imports (resolved from the suite's package), before
// the suite's ESM import snapshots its `request` export.
const suiteRequire = createRequire(createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json'));
const undici = suiteRequire('undici');
const originalRequest = undici.request;
undici.request = function requestWithAuth(u, opts = {}) {
    const where = typeof u === 'object' && !(u instanceof URL) ? u.origin ?? u.href : u;
    if (!isTarget(where)) return originalRequest.call(this, u, opts);
    let headers = opts.headers ?? {};
    if (Array.isArray(headers)) headers = [...headers, 'authorization', bearer];
    else if (!Object.keys(headers).some((h) => h.toLowerCase() === 'authorization')) headers = { ...headers, authorization: bearer };
    return originalRequest.call(this, u, { ...opts, headers });
};
