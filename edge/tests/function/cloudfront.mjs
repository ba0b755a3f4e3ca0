// A stand-in for CloudFront Functions' `cloudfront` module, for running the
// generated function under Node (edge/tests/function.rs). It implements the
// documented helpers the function uses and checks their arguments against
// the documentation, so a call CloudFront would refuse fails here too:
// - cf.kvs() with get/exists/meta (a missing key throws), and
//   cf.edgeLocation: "Helper methods for KeyValueStore" and "General helper
//   methods", CloudFront Developer Guide;
// - cf.updateRequestOrigin, cf.createRequestOriginGroup,
//   cf.selectRequestOriginById: "Helper methods for origin modification".
//   createRequestOriginGroup's `originIds` is written there both as strings
//   and as `{originId}` objects; the page's own example uses objects, which
//   is the form the function sends and the one accepted here.
// The harness sets the store, the edge location and the distribution's
// origins through `state`, and reads what the function did from it.

export const state = {
  kvs: {},
  edgeLocation: { name: 'TST', serverIp: '127.0.0.1', region: 'us-east-1' },
  distributionOrigins: null,
  allowIp: false,
  calls: [],
  decision: null,
};

function fail(what) {
  throw new Error('cloudfront stand-in: ' + what);
}

function intIn(v, lo, hi, what) {
  if (!Number.isInteger(v) || v < lo || v > hi) fail(what + ' must be an integer in [' + lo + ', ' + hi + '], got ' + v);
}

function hostName(v, what) {
  if (typeof v !== 'string' || v.length < 1 || v.length > 253 || v.includes(':')) fail(what + ' must be a name of 1-253 characters without ":"');
  if (!state.allowIp && /^[0-9.]+$/.test(v)) fail(what + ' must not be an IP address');
}

const ORIGIN_KEYS = ['domainName', 'hostHeader', 'originPath', 'customHeaders', 'connectionAttempts', 'originShield',
  'originAccessControlConfig', 'timeouts', 'customOriginConfig', 'sni', 'allowedCertificateNames'];
const FAILOVER_CODES = [400, 403, 404, 416, 500, 502, 503, 504];

const cf = {
  kvs() {
    return {
      async get(key, options) {
        if (typeof key !== 'string' || key.length > 512) fail('kvs key must be a string of at most 512 characters');
        if (options && !['string', 'json', 'bytes'].includes(options.format)) fail('kvs get format');
        if (!Object.prototype.hasOwnProperty.call(state.kvs, key)) throw new Error('KVS key not found: ' + key);
        const v = state.kvs[key];
        return options && options.format === 'json' ? JSON.parse(v) : v;
      },
      async exists(key) {
        return Object.prototype.hasOwnProperty.call(state.kvs, key);
      },
      async meta() {
        return { creationDateTime: '2026-01-01T00:00:00Z', lastUpdatedDateTime: '2026-01-01T00:00:00Z', keyCount: Object.keys(state.kvs).length };
      },
    };
  },
  get edgeLocation() {
    return state.edgeLocation;
  },
  updateRequestOrigin(p) {
    if (p === null || typeof p !== 'object') fail('updateRequestOrigin takes an object');
    for (const k of Object.keys(p)) if (!ORIGIN_KEYS.includes(k)) fail('updateRequestOrigin: unknown field ' + k);
    if (p.domainName !== undefined) hostName(p.domainName, 'domainName');
    if (p.hostHeader !== undefined) hostName(p.hostHeader, 'hostHeader');
    if (p.connectionAttempts !== undefined) intIn(p.connectionAttempts, 1, 3, 'connectionAttempts');
    if (p.timeouts !== undefined) {
      for (const k of Object.keys(p.timeouts)) if (!['readTimeout', 'connectionTimeout', 'keepAliveTimeout', 'responseCompletionTimeout'].includes(k)) fail('timeouts: unknown field ' + k);
      if (p.timeouts.connectionTimeout !== undefined) intIn(p.timeouts.connectionTimeout, 1, 10, 'connectionTimeout');
      if (p.timeouts.readTimeout !== undefined) intIn(p.timeouts.readTimeout, 1, 120, 'readTimeout');
    }
    if (p.customOriginConfig !== undefined) {
      const c = p.customOriginConfig;
      intIn(c.port, 1, 65535, 'customOriginConfig.port');
      if (!['http', 'https'].includes(c.protocol)) fail('customOriginConfig.protocol');
      if (!Array.isArray(c.sslProtocols) || c.sslProtocols.length === 0) fail('customOriginConfig.sslProtocols is required');
    }
    state.calls.push({ call: 'updateRequestOrigin', args: p });
  },
  createRequestOriginGroup(p) {
    if (!p || !Array.isArray(p.originIds) || p.originIds.length !== 2) fail('createRequestOriginGroup needs two originIds');
    for (const o of p.originIds) {
      if (!o || typeof o.originId !== 'string') fail('originIds entries are {originId}');
      if (state.distributionOrigins && !state.distributionOrigins.includes(o.originId)) fail('origin ' + o.originId + ' is not in the distribution');
      if (o.originOverrides && o.originOverrides.hostHeader !== undefined) hostName(o.originOverrides.hostHeader, 'originOverrides.hostHeader');
    }
    if (p.originIds[0].originId === p.originIds[1].originId) fail('an origin group needs two different origins');
    const codes = p.failoverCriteria && p.failoverCriteria.statusCodes;
    if (!Array.isArray(codes) || codes.length === 0 || codes.some((c) => !FAILOVER_CODES.includes(c))) fail('failoverCriteria.statusCodes');
    state.calls.push({ call: 'createRequestOriginGroup', args: p });
  },
  selectRequestOriginById(id) {
    if (typeof id !== 'string') fail('selectRequestOriginById takes an origin id');
    state.calls.push({ call: 'selectRequestOriginById', args: id });
  },
  // Not CloudFront's: the function hands its decision here when present.
  decided(d) {
    state.decision = d;
  },
};

export default cf;
