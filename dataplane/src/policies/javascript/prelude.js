// The bindings of Gravitee's JavaScript policies, built over a snapshot of the exchange.
//
// The host sets `__hgw_in` (JSON: the dialect, the phase, whether the body is readable, and the
// state) and `__hgw_base64` (a function); this prelude takes both off the global object, defines
// `request`, `response`, `context`, `result` and `State` (and, for the `js` policy, `Base64`, `atob`,
// `btoa` and a silent `console`), and evaluates to the two functions the host calls after the script:
// `failed()` and `finish(completion)`, which gives the state back as JSON. Nothing here reaches
// outside the snapshot; the host validates whatever comes back.
(function () {
  'use strict';
  const stringify = JSON.stringify;
  const input = JSON.parse(globalThis.__hgw_in);
  const base64 = globalThis.__hgw_base64;
  delete globalThis.__hgw_in;
  delete globalThis.__hgw_base64;
  const graal = input.graal;
  const state = input.state;
  const rq = state.request;
  const rs = state.response;
  const own = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
  const lower = (name) => String(name).toLowerCase();
  const text = (value) => (value === null || value === undefined ? '' : String(value));

  // Gravitee's HttpHeaders: case-insensitive names, several values per name. Callable, so that both
  // the Nashorn bean form (`request.headers.set(..)`) and the method form (`request.headers().set(..)`)
  // work. `entries` is the state's own list: changes are read back from it.
  function headers(entries) {
    const h = function () {
      return h;
    };
    const all = (name) => {
      const key = lower(name);
      return entries.filter((e) => lower(e[0]) === key).map((e) => e[1]);
    };
    const drop = (name) => {
      const key = lower(name);
      for (let i = entries.length - 1; i >= 0; i--) if (lower(entries[i][0]) === key) entries.splice(i, 1);
    };
    const add = (name, value) => {
      if (name === null || name === undefined) throw new TypeError('Header name must not be null');
      for (const v of Array.isArray(value) ? value : [value]) entries.push([String(name), text(v)]);
    };
    const names = () => {
      const seen = new Set();
      const out = [];
      for (const [name] of entries) {
        if (!seen.has(lower(name))) {
          seen.add(lower(name));
          out.push(name);
        }
      }
      return out;
    };
    const methods = {
      get: (name) => {
        const values = all(name);
        return values.length ? values[0] : null;
      },
      getAll: all,
      set: (name, value) => {
        drop(name);
        add(name, value);
        return h;
      },
      add: (name, value) => {
        add(name, value);
        return h;
      },
      remove: (name) => {
        drop(name);
        return h;
      },
      put: (name, value) => {
        const old = all(name);
        drop(name);
        add(name, value);
        return old;
      },
      contains: (name) => all(name).length > 0,
      containsKey: (name) => all(name).length > 0,
      names,
      keySet: names,
      size: () => names().length,
      isEmpty: () => entries.length === 0,
      clear: () => {
        entries.length = 0;
      },
      forEach: (fn) => {
        for (const [key, value] of entries.slice()) fn({ key, value, getKey: () => key, getValue: () => value });
      },
      entrySet: () => names().map((key) => ({ key, value: all(key), getKey: () => key, getValue: () => all(key) })),
      toSingleValueMap: () => Object.fromEntries(names().map((n) => [n, all(n)[0]])),
      toListValuesMap: () => Object.fromEntries(names().map((n) => [n, all(n)])),
    };
    Object.assign(h, methods);
    return h;
  }

  // Gravitee's MultiValueMap (query and path parameters) as the Nashorn policy shows it: a map
  // (`request.parameters['q'][0]`) with MultiValueMap's methods beside the entries.
  function multimap(entries) {
    const m = Object.fromEntries(entries.map(([k, v]) => [k, v.slice()]));
    const list = (value) => (Array.isArray(value) ? value.map(text) : [text(value)]);
    const methods = {
      get: (k) => (own(m, k) ? m[k] : null),
      getFirst: (k) => (own(m, k) && m[k].length ? m[k][0] : null),
      add: (k, v) => {
        (own(m, k) ? m[k] : (m[k] = [])).push(text(v));
      },
      set: (k, v) => {
        m[k] = [text(v)];
      },
      setAll: (values) => {
        for (const [k, v] of Object.entries(values)) m[k] = [text(v)];
      },
      put: (k, v) => {
        const old = own(m, k) ? m[k] : null;
        m[k] = list(v);
        return old;
      },
      remove: (k) => {
        const old = own(m, k) ? m[k] : null;
        delete m[k];
        return old;
      },
      containsKey: (k) => own(m, k),
      containsAllKeys: (keys) => keys.every((k) => own(m, k)),
      keySet: () => Object.keys(m),
      size: () => Object.keys(m).length,
      isEmpty: () => Object.keys(m).length === 0,
      toSingleValueMap: () => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v[0]])),
    };
    for (const [name, fn] of Object.entries(methods)) Object.defineProperty(m, name, { value: fn, enumerable: false });
    return m;
  }

  // A read-only map that is also callable (`context.properties()['k']` and `context.properties['k']`).
  function callableMap(entries) {
    const copy = () => Object.fromEntries(entries);
    const f = function () {
      return copy();
    };
    for (const [k, v] of entries) if (!(k in f)) f[k] = v;
    return f;
  }

  // The request and response fields: `request.path` (Nashorn bean form) or `request.path()` (js);
  // `getPath()` in both.
  function fields(object, values) {
    for (const [name, value] of Object.entries(values)) {
      object[name] = graal ? () => value : value;
      object['get' + name[0].toUpperCase() + name.slice(1)] = () => value;
    }
  }

  // The body of the phase, where the configuration reads it.
  let content = state.content;
  function contentAccessors(object, phase) {
    const mine = input.phase === phase && input.content;
    const refused = () => new Error('Accessing ' + phase + ' content must be enabled in the policy configuration');
    if (graal) {
      object.content = function (value) {
        if (arguments.length === 0) return mine ? content : null;
        if (mine) content = value === null || value === undefined ? null : String(value);
      };
      object.contentAsBase64 = () => (mine && content !== null ? base64(content, false) : null);
      return;
    }
    const read = () => {
      if (mine) return content;
      // Gravitee's V3 engine gives header scripts no content; its v4 engines refuse to read it.
      if (input.legacy) return null;
      throw refused();
    };
    Object.defineProperty(object, 'content', { get: read, enumerable: true });
    object.getContent = read;
  }

  const request = {};
  fields(request, {
    id: rq.id,
    transactionId: rq.transactionId,
    clientIdentifier: rq.clientIdentifier,
    uri: rq.uri,
    host: rq.host,
    originalHost: rq.originalHost,
    path: rq.path,
    pathInfo: rq.pathInfo,
    contextPath: rq.contextPath,
    method: rq.method,
    scheme: rq.scheme,
    version: rq.version,
    timestamp: rq.timestamp,
    remoteAddress: rq.remoteAddress,
    localAddress: rq.localAddress,
  });
  const requestHeaders = headers(rq.headers);
  request.headers = requestHeaders;
  request.getHeaders = () => requestHeaders;
  request.header = (name) => requestHeaders.get(name);
  const first = (entries, name) => {
    const found = entries.find(([k]) => k === name);
    return found && found[1].length ? found[1][0] : null;
  };
  let readBack = () => undefined;
  if (graal) {
    request.parameters = () => Object.fromEntries(rq.parameters.map(([k, v]) => [k, v.slice()]));
    request.parameter = (name) => first(rq.parameters, name);
    request.pathParameters = () => Object.fromEntries(rq.pathParameters.map(([k, v]) => [k, v.slice()]));
    request.pathParameter = (name) => first(rq.pathParameters, name);
  } else {
    const parameters = multimap(rq.parameters);
    const pathParameters = multimap(rq.pathParameters);
    request.parameters = parameters;
    request.getParameters = () => parameters;
    request.pathParameters = pathParameters;
    request.getPathParameters = () => pathParameters;
    readBack = () => {
      rq.parameters = Object.entries(parameters).map(([k, v]) => [String(k), (Array.isArray(v) ? v : [v]).map(text)]);
    };
  }
  contentAccessors(request, 'request');

  const response = {};
  const responseHeaders = headers(rs.headers);
  response.headers = responseHeaders;
  response.getHeaders = () => responseHeaders;
  response.header = (name) => responseHeaders.get(name);
  response.trailers = headers([]);
  if (graal) {
    response.status = function (code) {
      if (arguments.length === 0) return rs.status;
      rs.status = Number(code);
    };
    response.reason = function (reason) {
      if (arguments.length === 0) return rs.reason;
      rs.reason = text(reason);
    };
  } else {
    // Nashorn reads `response.status` as the status (getStatus) and calls `response.status(404)`:
    // a function whose value is the status serves both (`==`, arithmetic, string concatenation).
    const status = function (code) {
      if (arguments.length === 0) return rs.status;
      rs.status = Number(code);
      return response;
    };
    status.valueOf = () => rs.status;
    status.toString = () => String(rs.status);
    response.status = status;
    response.getStatus = () => rs.status;
    const reason = function (value) {
      if (arguments.length === 0) return rs.reason;
      rs.reason = text(value);
      return response;
    };
    reason.valueOf = () => rs.reason;
    reason.toString = () => rs.reason;
    response.reason = reason;
    response.getReason = () => rs.reason;
  }
  contentAccessors(response, 'response');

  const attributes = Object.fromEntries(state.attributes);
  const properties = callableMap(state.properties);
  const dictionaries = callableMap([]);
  const attribute = (name) => (own(attributes, name) ? attributes[name] : null);
  const setAttribute = (name, value) => {
    attributes[name] = value;
  };
  const removeAttribute = (name) => {
    delete attributes[name];
  };
  const context = graal
    ? {
        getAttribute: attribute,
        get: attribute,
        setAttribute,
        set: setAttribute,
        removeAttribute,
        remove: removeAttribute,
        getAttributeNames: () => Object.keys(attributes),
        getAttributes: () => Object.assign({}, attributes),
        properties: () => properties(),
        dictionaries: () => dictionaries(),
      }
    : {
        attributes,
        getAttributes: () => attributes,
        getAttribute: attribute,
        setAttribute,
        putAttribute: setAttribute,
        removeAttribute,
        getAttributeNames: () => Object.keys(attributes),
        properties,
        getProperties: () => properties(),
        dictionaries,
        getDictionaries: () => dictionaries(),
      };
  Object.defineProperty(context, 'attributeNames', { get: () => Object.keys(attributes), enumerable: false });

  const State = Object.freeze({ SUCCESS: 'SUCCESS', FAILURE: 'FAILURE' });
  const outcome = { state: State.SUCCESS, code: 500, error: null, key: null, contentType: null };
  const accessors = {
    getState: () => outcome.state,
    setState: (value) => {
      outcome.state = value;
    },
    getCode: () => outcome.code,
    setCode: (value) => {
      outcome.code = value;
    },
    getError: () => outcome.error,
    setError: (value) => {
      outcome.error = value;
    },
    getKey: () => outcome.key,
    setKey: (value) => {
      outcome.key = value;
    },
    getContentType: () => outcome.contentType,
    setContentType: (value) => {
      outcome.contentType = value;
    },
  };
  let result;
  if (graal) {
    // GraalJS exposes methods only: `result.state = ..` changes nothing there, nor here.
    result = Object.freeze(
      Object.assign({}, accessors, {
        fail: (code, error, key, contentType) => {
          outcome.state = State.FAILURE;
          outcome.code = code;
          outcome.error = error;
          if (key !== undefined) outcome.key = key;
          if (contentType !== undefined) outcome.contentType = contentType;
        },
      }),
    );
  } else {
    result = outcome;
    for (const [name, fn] of Object.entries(accessors)) Object.defineProperty(result, name, { value: fn });
  }

  globalThis.request = request;
  globalThis.response = response;
  globalThis.context = context;
  globalThis.result = result;
  globalThis.State = State;
  if (graal) {
    const encode = (value) => {
      if (value === null || value === undefined) throw new TypeError('btoa requires a string argument');
      return base64(String(value), false);
    };
    const decode = (value) => {
      if (value === null || value === undefined) throw new TypeError('atob requires a string argument');
      return base64(String(value), true);
    };
    globalThis.Base64 = Object.freeze({ encode, decode });
    globalThis.btoa = encode;
    globalThis.atob = decode;
    const quiet = () => undefined;
    globalThis.console = Object.freeze({ log: quiet, error: quiet, warn: quiet, info: quiet, debug: quiet });
  }

  const failed = () => outcome.state === State.FAILURE;
  return {
    failed,
    finish: (completion) => {
      readBack();
      const value = (v) => (typeof v === 'string' ? v : typeof v === 'object' ? stringify(v) : String(v));
      state.attributes = Object.entries(attributes)
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => [k, value(v)]);
      state.content = content;
      const failure = failed()
        ? {
            code: Number(outcome.code),
            error: outcome.error === null || outcome.error === undefined ? null : String(outcome.error),
            key: outcome.key === null || outcome.key === undefined ? null : String(outcome.key),
            contentType: outcome.contentType === null || outcome.contentType === undefined ? null : String(outcome.contentType),
          }
        : null;
      return stringify({ state, completion: typeof completion === 'string' ? completion : null, failure });
    },
  };
})();
