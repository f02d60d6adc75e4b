//! What the gateway exposes to expressions.

/// The request (and, in the response phase, response) an expression is evaluated against.
///
/// Every method has a default returning `None` or an empty list, so a host implements only what it
/// has: the agent validating definitions implements nothing, the dataplane implements all of it.
/// A value the host does not provide evaluates to `null`, as an absent value does in Gravitee.
pub trait Context {
    /// `#request.path`: the full request path, e.g. `/v1/orders/42`.
    fn request_path(&self) -> Option<&str> {
        None
    }
    /// `#request.pathInfo`: the path below the API's context path, e.g. `/orders/42`.
    fn request_path_info(&self) -> Option<&str> {
        None
    }
    /// `#request.contextPath`: the context path the request matched, with a trailing `/` (`/v1/`).
    fn request_context_path(&self) -> Option<&str> {
        None
    }
    /// `#request.method`: upper-case method name, e.g. `POST`.
    fn request_method(&self) -> Option<&str> {
        None
    }
    /// `#request.host`: the `Host` (or `:authority`) the client sent.
    fn request_host(&self) -> Option<&str> {
        None
    }
    /// `#request.remoteAddress`: client IP address, without port.
    fn remote_address(&self) -> Option<&str> {
        None
    }
    /// `#request.localAddress`: gateway IP address the request arrived on, without port.
    fn local_address(&self) -> Option<&str> {
        None
    }
    /// `#request.ssl.client` / `#request.ssl.server`: the subject of that side's certificate
    /// (`None` on plain HTTP, or when the client sent no certificate: every attribute is null then,
    /// as with Gravitee's empty principal).
    fn ssl_principal(&self, side: crate::SslSide) -> Option<&crate::X500Principal> {
        let _ = side;
        None
    }
    /// `#request.ssl.clientHost`: the TLS peer's address (`None` on plain HTTP).
    fn ssl_client_host(&self) -> Option<&str> {
        None
    }
    /// `#request.ssl.clientPort`: the TLS peer's port (`None` on plain HTTP).
    fn ssl_client_port(&self) -> Option<u16> {
        None
    }
    /// `#request.id`.
    fn request_id(&self) -> Option<&str> {
        None
    }
    /// `#request.transactionId`.
    fn transaction_id(&self) -> Option<&str> {
        None
    }
    /// `#request.headers['name']`: every value of a request header, in order. `name` must be
    /// matched case-insensitively. Empty means absent (the expression sees `null`).
    fn request_header(&self, name: &str) -> Vec<&str> {
        let _ = name;
        Vec::new()
    }
    /// `#request.headers['name'][index]`. Override to avoid building the whole list.
    fn request_header_at(&self, name: &str, index: usize) -> Option<&str> {
        self.request_header(name).get(index).copied()
    }
    /// `#request.params['name']`: every value of a query parameter, in order, decoded.
    fn query_param(&self, name: &str) -> Vec<&str> {
        let _ = name;
        Vec::new()
    }
    /// `#request.params['name'][index]`. Override to avoid building the whole list.
    fn query_param_at(&self, name: &str, index: usize) -> Option<&str> {
        self.query_param(name).get(index).copied()
    }
    /// `#request.pathParams['name']`: the segment captured by `:name` in the flow's path.
    fn path_param(&self, name: &str) -> Option<&str> {
        let _ = name;
        None
    }
    /// `#context.attributes['name']`: an execution attribute, e.g. `user`, `plan`, `application`.
    fn attribute(&self, name: &str) -> Option<&str> {
        let _ = name;
        None
    }
    /// `#group[i]`: capture group `i + 1` of the regular expression the running policy matched
    /// (`None`: no such group; a group that did not participate is `Some("")`).
    fn regex_group(&self, index: usize) -> Option<&str> {
        let _ = index;
        None
    }
    /// `#groupName['name']`: the named capture `name` of that expression.
    fn regex_named_group(&self, name: &str) -> Option<&str> {
        let _ = name;
        None
    }
    /// `#subscription.<name>`: `id`, `clientId` or `applicationName` of the subscription the request
    /// runs under (key-less: the id is the client address, the others are null).
    fn subscription_field(&self, name: &str) -> Option<&str> {
        let _ = name;
        None
    }
    /// `#api.properties['key']` (v2: `#properties['key']`): one of the API's properties.
    fn api_property(&self, key: &str) -> Option<&str> {
        let _ = key;
        None
    }
    /// `#api.<name>`: `id` or `name` of the API being executed.
    fn api_field(&self, name: &str) -> Option<&str> {
        let _ = name;
        None
    }
    /// `#request.content`: the request body as text, where the gateway buffered it for this
    /// expression (see [`crate::Expression::reads_content`]).
    fn request_content(&self) -> Option<&str> {
        None
    }
    /// `#response.content`: the response body as text, where the gateway buffered it.
    fn response_content(&self) -> Option<&str> {
        None
    }
    /// `#response.status`; `None` before the response phase.
    fn response_status(&self) -> Option<u16> {
        None
    }
    /// `#response.headers['name']`: every value of a response header, case-insensitive name.
    fn response_header(&self, name: &str) -> Vec<&str> {
        let _ = name;
        Vec::new()
    }
    /// `#response.headers['name'][index]`. Override to avoid building the whole list.
    fn response_header_at(&self, name: &str, index: usize) -> Option<&str> {
        self.response_header(name).get(index).copied()
    }
    /// `#calloutResponse.status`: the status of the http-callout policy's call, while that policy
    /// evaluates its error condition and variables (`None` elsewhere).
    fn callout_status(&self) -> Option<u16> {
        None
    }
    /// `#calloutResponse.headers['name']`: every value of a header of the callout's answer.
    fn callout_header(&self, name: &str) -> Vec<&str> {
        let _ = name;
        Vec::new()
    }
    /// `#calloutResponse.content`: the callout's answer as text.
    fn callout_content(&self) -> Option<&str> {
        None
    }
}

/// A context with nothing in it: every value is `null`. Useful for validation and constant folding.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyContext;

impl Context for EmptyContext {}
