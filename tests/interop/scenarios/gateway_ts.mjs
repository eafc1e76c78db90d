// mcpgate interop scenarios driven by the official MCP TypeScript SDK (@modelcontextprotocol/sdk).
// Every MCP request goes through mcpgate (GW_URL). Prints PASS/FAIL lines; prefix ts/.
import { appendFileSync } from 'node:fs';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const env = (name, dflt) => {
  const v = process.env[name] ?? dflt;
  if (v === undefined) {
    console.log(`FAIL ts/setup: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const GW = env('GW_URL');
const GW_ADMIN = env('GW_ADMIN_URL');
const AS_JWT = env('AS_JWT_URL');
const CLIENT_ID = process.env.CLIENT_ID ?? 'interop-client';
const CLIENT_SECRET = env('CLIENT_SECRET', 'interop-client-secret-0123456789abcdef');
const NOTES = `${GW}/notes/mcp`;
const EVERYTHING = `${GW}/everything/mcp`;
const EVERYTHING_UP = env('EVERYTHING_UPSTREAM');
const REDIRECT_URI = 'http://localhost:33418/callback';

let passed = 0;
let failed = 0;
const ok = (name, detail = '') => { passed++; console.log(`PASS ts/${name}${detail ? ` (${detail})` : ''}`); };
const fail = (name, why) => { failed++; console.log(`FAIL ts/${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 1500)}`); };
const check = (name, cond, why, detail) => (cond ? ok(name, detail) : fail(name, why));

async function ccToken(resource, scope) {
  const r = await fetch(`${AS_JWT}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
  });
  if (!r.ok) throw new Error(`token endpoint ${r.status}: ${await r.text()}`);
  return remember((await r.json()).access_token);
}

// run.sh greps the gateway's logs for every token handed out (none may appear there)
function remember(token) {
  if (process.env.INTEROP_TOKENS_FILE && token) appendFileSync(process.env.INTEROP_TOKENS_FILE, `${token}\n`);
  return token;
}

const jwtClaims = (t) => JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString());

async function connect(url, opts = {}) {
  const client = new Client({ name: 'mcpgate-interop-ts', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), opts);
  await client.connect(transport);
  return { client, transport };
}

// ------------------------------------------------------------- headless login/consent for oidc-provider

async function driveAuthorization(authUrl) {
  const jar = new Map();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const store = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i).trim(), pair.slice(i + 1));
    }
  };
  let url = authUrl;
  let init = { method: 'GET' };
  for (let i = 0; i < 25; i++) {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookieHeader() } });
    store(res);
    if ([301, 302, 303, 307, 308].includes(res.status)) {
      const loc = new URL(res.headers.get('location'), url).href;
      if (loc.startsWith(REDIRECT_URI)) {
        const q = new URL(loc).searchParams;
        if (q.get('error')) throw new Error(`authorization error ${q.get('error')}: ${q.get('error_description')}`);
        return { code: q.get('code'), state: q.get('state') };
      }
      url = loc;
      init = { method: 'GET' };
      continue;
    }
    const html = await res.text();
    if (res.status === 200 && html.includes('<form')) {
      const action = html.match(/<form[^>]*action="([^"]+)"/)[1].replaceAll('&amp;', '&');
      const prompt = html.match(/name="prompt" value="([^"]+)"/)[1];
      const body = new URLSearchParams({ prompt });
      if (prompt === 'login') { body.set('login', 'bob'); body.set('password', 'any-password'); }
      url = new URL(action, url).href;
      init = { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } };
      continue;
    }
    throw new Error(`unexpected ${res.status} at ${url}: ${html.slice(0, 300)}`);
  }
  throw new Error('too many redirects');
}

class HeadlessOAuthProvider {
  constructor() {
    this.authUrls = [];
    this._tokens = undefined;
    this._client = undefined;
    this._verifier = undefined;
    this.pending = undefined;
  }
  get redirectUrl() { return REDIRECT_URI; }
  get clientMetadata() {
    return {
      client_name: 'mcpgate-interop-ts',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    };
  }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(t) { this._tokens = t; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  async redirectToAuthorization(url) {
    this.authUrls.push(url.href);
    this.pending = await driveAuthorization(url.href);
  }
}

// ------------------------------------------------------------- scenarios

async function staticBearerParity() {
  const tok = await ccToken(EVERYTHING, 'mcp:tools');
  const g = await connect(EVERYTHING, { requestInit: { headers: { Authorization: `Bearer ${tok}` } } });
  const u = await connect(EVERYTHING_UP);
  try {
    const [gt, ut] = [await g.client.listTools(), await u.client.listTools()];
    check('static_bearer_tools_list_parity', JSON.stringify(gt) === JSON.stringify(ut),
      `gateway=${gt.tools.map((t) => t.name)} upstream=${ut.tools.map((t) => t.name)}`, `${gt.tools.length} tools`);
    const args = { name: 'echo', arguments: { message: 'ts through mcpgate' } };
    const [gr, ur] = [await g.client.callTool(args), await u.client.callTool(args)];
    check('static_bearer_call_parity', JSON.stringify(gr) === JSON.stringify(ur), `gateway=${JSON.stringify(gr)} upstream=${JSON.stringify(ur)}`,
      gr.content?.[0]?.text);
    check('static_bearer_server_version', JSON.stringify(g.client.getServerVersion()) === JSON.stringify(u.client.getServerVersion()),
      `${JSON.stringify(g.client.getServerVersion())} vs ${JSON.stringify(u.client.getServerVersion())}`);
  } finally {
    await g.client.close();
    await u.client.close();
  }
}

async function clientCredentialsProvider() {
  // 401 -> PRM (from WWW-Authenticate) -> AS metadata -> client_credentials token -> retry
  const authProvider = new ClientCredentialsProvider({
    clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, scope: 'mcp:tools notes:read', expectedIssuer: AS_JWT,
  });
  const { client } = await connect(NOTES, { authProvider });
  try {
    const res = await client.callTool({ name: 'read_note', arguments: { name: 'welcome' } });
    if (!authProvider.tokens()) {
      fail('client_credentials_provider', 'the gateway never challenged the client (no 401), so no token was requested');
      return;
    }
    const claims = jwtClaims(remember(authProvider.tokens().access_token));
    check('client_credentials_provider', !res.isError && claims.aud === NOTES,
      `isError=${res.isError} aud=${claims.aud}`, `aud=${claims.aud} scope=${claims.scope}: ${res.content[0].text}`);
    // the TS SDK re-requests its own configured scope on a 403 challenge, so the refusal surfaces as 403
    try {
      const r = await client.callTool({ name: 'write_note', arguments: { name: 'ts-denied', text: 'x' } });
      fail('client_credentials_insufficient_scope_403', `call succeeded: ${JSON.stringify(r)}`);
    } catch (e) {
      check('client_credentials_insufficient_scope_403', e instanceof StreamableHTTPError && e.code === 403,
        `${e?.constructor?.name} code=${e?.code} ${e?.message}`, `${e.constructor.name} code=${e.code}`);
    }
  } finally {
    await client.close();
  }
}

// The sum of a metric's series that carry every label in `labels`, from the gateway's admin listener.
async function metric(name, labels) {
  const text = await (await fetch(`${GW_ADMIN}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const cut = line.lastIndexOf(' ');
    if (want.every((w) => line.slice(0, cut).includes(w))) sum += Number(line.slice(cut + 1));
  }
  return sum;
}

async function setTokenTTL(seconds) {
  const r = await fetch(`${AS_JWT}/admin/ttl?seconds=${seconds}`, { method: 'POST' });
  if (!r.ok) throw new Error(`POST /admin/ttl: ${r.status}`);
}

async function getStreamRenewedAfterExpiry() {
  // Tokens live 4 s here. The gateway ends the SDK's standalone GET stream at exp + 1 s of leeway;
  // the SDK reconnects, gets 401, fetches a new token with its provider and reopens the stream.
  const counts = async () => [
    await metric('mcpgate_streams_expired_total', { route: 'notes' }),
    await metric('mcpgate_requests_total', { route: 'notes', method: 'GET', status: '200' }),
  ];
  const [expired0, gets0] = await counts();
  const authProvider = new ClientCredentialsProvider({
    clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, scope: 'mcp:tools notes:read', expectedIssuer: AS_JWT,
  });
  const issued = [];
  const save = authProvider.saveTokens.bind(authProvider);
  authProvider.saveTokens = (t) => { issued.push(remember(t.access_token)); return save(t); };
  const errors = [];
  let client;
  await setTokenTTL(4);
  try {
    ({ client } = await connect(NOTES, { authProvider }));
    client.onerror = (e) => errors.push(`${e?.constructor?.name}: ${e?.message}`);
    const firstExp = jwtClaims(issued[0]).exp;
    // exp + leeway, then the SDK's first reconnection delay (1 s) and a new token
    await new Promise((done) => setTimeout(done, Math.max(0, (firstExp + 1 + 3) * 1000 - Date.now())));
    const res = await client.callTool({ name: 'read_note', arguments: { name: 'welcome' } });
    const [expired1, gets1] = await counts();
    const [ended, opened] = [expired1 - expired0, gets1 - gets0];
    check('get_stream_renewed_after_token_expiry',
      ended >= 1 && opened >= 2 && issued.length >= 2 && !res.isError && errors.length === 0,
      `streams ended at expiry: ${ended}, GET streams opened: ${opened}, tokens: ${issued.length}, call isError=${res.isError}, errors: ${errors.join('; ')}`,
      `${ended} ended at expiry, ${opened} opened, ${issued.length} tokens; then read_note: ${res.content?.[0]?.text}`);
  } finally {
    await setTokenTTL(0);
    await client?.close();
  }
}

async function authCodeFlowAndStepUp() {
  const provider = new HeadlessOAuthProvider();
  let transport = new StreamableHTTPClientTransport(new URL(NOTES), { authProvider: provider });
  let client = new Client({ name: 'mcpgate-interop-ts', version: '0.0.0' });
  try {
    await client.connect(transport);
    fail('authcode_dcr_pkce_flow', 'connected without authorization');
    return;
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !provider.pending) {
      fail('authcode_dcr_pkce_flow', `expected UnauthorizedError after redirect, got ${e?.constructor?.name}: ${e?.message}`);
      return;
    }
  }
  await transport.finishAuth(provider.pending.code);
  provider.pending = undefined;
  transport = new StreamableHTTPClientTransport(new URL(NOTES), { authProvider: provider });
  client = new Client({ name: 'mcpgate-interop-ts', version: '0.0.0' });
  await client.connect(transport);
  remember(provider.tokens().access_token);
  const first = new URL(provider.authUrls[0]).searchParams;
  const claims = jwtClaims(provider.tokens().access_token);
  check('authcode_dcr_pkce_flow', claims.aud === NOTES && first.get('resource') === NOTES && first.get('code_challenge_method') === 'S256',
    `aud=${claims.aud} resource=${first.get('resource')}`,
    `DCR client ${provider.clientInformation().client_id.slice(0, 8)}…, scope=${first.get('scope')}, aud=${claims.aud}`);
  // step-up: the SDK re-authorizes with the 403 challenge scope; with a redirect-based provider that
  // surfaces as UnauthorizedError, the app completes the redirect and retries.
  let res;
  try {
    res = await client.callTool({ name: 'write_note', arguments: { name: 'from-ts-sdk', text: 'ts stepped up' } });
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !provider.pending) throw e;
    await transport.finishAuth(provider.pending.code);
    provider.pending = undefined;
    await client.close();
    transport = new StreamableHTTPClientTransport(new URL(NOTES), { authProvider: provider });
    client = new Client({ name: 'mcpgate-interop-ts', version: '0.0.0' });
    await client.connect(transport);
    res = await client.callTool({ name: 'write_note', arguments: { name: 'from-ts-sdk', text: 'ts stepped up' } });
  }
  const last = new URL(provider.authUrls.at(-1)).searchParams;
  const finalClaims = jwtClaims(remember(provider.tokens().access_token));
  check('authcode_step_up', !res.isError && provider.authUrls.length >= 2 && (finalClaims.scope || '').split(' ').includes('notes:write'),
    `isError=${res.isError} authorizations=${provider.authUrls.length} scope=${finalClaims.scope}`,
    `re-authorized with scope=${last.get('scope')}: ${res.content?.[0]?.text}`);
  await client.close();
}

for (const [name, fn] of [
  ['static_bearer', staticBearerParity],
  ['client_credentials', clientCredentialsProvider],
  ['get_stream_renewal', getStreamRenewedAfterExpiry],
  ['authcode', authCodeFlowAndStepUp],
]) {
  try {
    await fn();
  } catch (e) {
    console.error(e);
    fail(name, `${e?.constructor?.name}: ${e?.message}`);
  }
}
process.exit(failed ? 1 : 0);
