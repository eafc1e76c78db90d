// Authorization server for the mcpgate interop suite: a real, unmodified oidc-provider
// (https://github.com/panva/node-oidc-provider) with a configuration that issues RFC 9068 JWT access
// tokens whose `aud` is the RFC 8707 resource indicator, or opaque tokens for RFC 7662 introspection.
//
// Usage: node as/server.mjs [port]
// Environment:
//   PORT                 listen port on 127.0.0.1 (or first argument); required
//   RESOURCE_PREFIX      resource indicators accepted (e.g. the gateway public_url "http://127.0.0.1:8080");
//                        any resource not starting with it is refused with invalid_target
//   DEFAULT_RESOURCE     resource used when a token request carries none (optional)
//   OPAQUE=1             issue opaque access tokens (accessTokenFormat 'opaque') instead of JWTs
//   KEY_ALG              ES256 (default) or RS256: signing algorithm of access tokens
//   CLIENT_SECRET        secret of the pre-registered confidential test client "interop-client"
//   INTROSPECTION_SECRET secret of the introspection client "mcpgate-introspect"
//   TOKEN_TTL            access token lifetime in seconds (default 300)
//
// Admin (loopback only, plain HTTP on the same port, not part of oidc-provider):
//   POST /admin/rotate            add a new signing key first in the JWKS and sign new tokens with it
//   POST /admin/rotate?retire=1   same, and drop every older key from the JWKS
//   POST /admin/ttl?seconds=N     access tokens issued from now on live N seconds (0: back to TOKEN_TTL)
//   GET  /admin/state             {"kid": current signing kid, "kids": [all kids in the JWKS]}
//   SIGUSR2                       same as POST /admin/rotate
import * as crypto from 'node:crypto';

import Provider, { errors } from 'oidc-provider';
// oidc-provider offers no public API to change keys of a running instance. The suite needs live
// rotation, so it reaches the instance's keystore through the package's own internal accessor.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

const port = Number(process.env.PORT || process.argv[2]);
if (!port) {
  console.error('usage: PORT=<port> node as/server.mjs  (or node as/server.mjs <port>)');
  process.exit(2);
}
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;
const resourcePrefix = process.env.RESOURCE_PREFIX || 'http://127.0.0.1';
const defaultResource = process.env.DEFAULT_RESOURCE || undefined;
const opaque = process.env.OPAQUE === '1';
const alg = process.env.KEY_ALG || 'ES256';
const defaultTokenTTL = Number(process.env.TOKEN_TTL || 300);
let tokenTTL = defaultTokenTTL;
const clientSecret = process.env.CLIENT_SECRET || 'interop-client-secret-0123456789abcdef';
const introspectionSecret = process.env.INTROSPECTION_SECRET || 'introspection-secret-0123456789abcdef';

export const RESOURCE_SCOPES = ['mcp:tools', 'notes:read', 'notes:write', 'notes:admin'];

function newKey() {
  const { privateKey } = alg.startsWith('RS')
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = `k-${Date.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

function publicPart(jwk) {
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  return pub;
}

const firstKey = newKey();
let currentKid = firstKey.kid;

const configuration = {
  clients: [
    {
      client_id: 'interop-client',
      client_secret: clientSecret,
      grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:33418/callback', 'http://localhost:33418/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'interop-client-post',
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      // The gateway's introspection credentials (RFC 7662 §2.1: the RS authenticates to the AS).
      client_id: 'mcpgate-introspect',
      client_secret: introspectionSecret,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  clientDefaults: {
    id_token_signed_response_alg: alg,
    grant_types: ['authorization_code', 'refresh_token'],
  },
  jwks: { keys: [firstKey] },
  cookies: { keys: ['mcpgate-interop-cookie-key-not-secret'] },
  scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES],
  pkce: { required: () => true },
  // Registration "policy": a dynamically registered client (e.g. the MCP SDKs' DCR) registers with
  // the scope it first needed. oidc-provider would then refuse any other scope for that client, so a
  // later step-up (403 insufficient_scope -> re-authorize with more scope) would fail with
  // invalid_scope. Drop the client's scope allow-list at registration: what a token gets is still
  // what the user consented to and what the resource server allows.
  extraClientMetadata: {
    properties: ['mcp_interop_policy'],
    validator(ctx, key, value, metadata) {
      if (ctx?.oidc?.route === 'registration') {
        delete metadata.scope;
      }
    },
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    resourceIndicators: {
      enabled: true,
      defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf[0];
        return defaultResource;
      },
      useGrantedResource() {
        return true;
      },
      getResourceServerInfo(ctx, resourceIndicator) {
        if (!resourceIndicator.startsWith(resourcePrefix)) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        const info = {
          scope: RESOURCE_SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: tokenTTL,
          accessTokenFormat: opaque ? 'opaque' : 'jwt',
        };
        if (!opaque) {
          info.jwt = { sign: { alg, kid: currentKid } };
        }
        return info;
      },
    },
  },
  ttl: {
    AccessToken: () => tokenTTL,
    ClientCredentials: () => tokenTTL,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    AuthorizationCode: 60,
    RefreshToken: 3600,
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

function rotate(retire) {
  const internals = instance(provider);
  const key = newKey();
  if (retire) {
    internals.keystore.clear();
    internals.jwks.keys.length = 0;
  }
  internals.keystore.add(key);
  internals.jwks.keys.unshift(publicPart(key));
  currentKid = key.kid;
  console.log(`[as] rotated signing key: now ${currentKid}; jwks=${internals.jwks.keys.map((k) => k.kid).join(',')}`);
  return { kid: currentKid, kids: internals.jwks.keys.map((k) => k.kid) };
}

process.on('SIGUSR2', () => rotate(false));

provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/admin/')) {
    const remote = ctx.req.socket.remoteAddress || '';
    if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(remote)) {
      ctx.status = 403;
      return;
    }
    if (ctx.path === '/admin/rotate' && ctx.method === 'POST') {
      ctx.body = rotate(ctx.query.retire === '1');
      return;
    }
    if (ctx.path === '/admin/ttl' && ctx.method === 'POST') {
      // lifetime of access tokens issued from now on; 0 restores the configured default
      const seconds = Number(ctx.query.seconds);
      tokenTTL = seconds > 0 ? seconds : defaultTokenTTL;
      ctx.body = { tokenTTL };
      return;
    }
    if (ctx.path === '/admin/state' && ctx.method === 'GET') {
      ctx.body = { kid: currentKid, kids: instance(provider).jwks.keys.map((k) => k.kid), opaque, alg };
      return;
    }
    ctx.status = 404;
    return;
  }
  await next();
});

provider.on('server_error', (ctx, err) => console.error('[as] server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`[as] oidc-provider listening on ${issuer} (opaque=${opaque}, alg=${alg}, kid=${currentKid}, resource_prefix=${resourcePrefix})`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
