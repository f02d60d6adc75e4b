//! gRPC through the dataplane, between a real gRPC client (grpcurl) and a real gRPC server (tonic:
//! health and reflection services), as Gravitee's gRPC connectors call endpoints: a v4 API whose
//! endpoint is configured for HTTP/1.1 still makes a call with `Content-Type: application/grpc` over
//! HTTP/2, a v4 `grpc://` target and a v2 endpoint of type `grpc` make every call a gRPC call, and
//! the answers' trailers (`grpc-status`) reach the client, for unary and streaming calls.

use hgw_tests::gateway::{Agent, Dataplane, run_grpcurl};
use hgw_tests::{Backend, CloudGateSim, v2_api, v4_api};
use serde_json::json;
use tokio::net::TcpListener;

/// A gRPC server on `127.0.0.1:0` (h2c) serving `grpc.health.v1.Health` (SERVING) and server reflection
/// (v1) over the workspace's descriptors; stops with the returned task.
async fn grpc_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hgw_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .unwrap();
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_reach_grpc_endpoints_over_http2_with_their_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = CloudGateSim::start(dir.path(), &[]).await;
    let (server, _task) = grpc_server().await;

    // v4, the endpoint left at HTTP/1.1: the call is gRPC by its Content-Type.
    sim.put_api(v4_api("health", "/grpc.health.v1.Health", &format!("http://{server}/grpc.health.v1.Health"))).await;
    // v4 with a grpc:// target.
    sim.put_api(v4_api(
        "reflection",
        "/grpc.reflection.v1.ServerReflection",
        &format!("grpc://{server}/grpc.reflection.v1.ServerReflection"),
    ))
    .await;
    // v2, an endpoint of type `grpc` (an h2c echo server here): every call, even a plain GET, goes as a
    // gRPC call.
    let echo = Backend::start_h2c("echo").await;
    let mut legacy = v2_api("legacy", "/legacy", &echo.url().replacen("http://", "grpc://", 1));
    legacy["proxy"]["groups"][0]["endpoints"][0]["type"] = json!("grpc");
    sim.put_api(legacy).await;

    let token = sim.token().await;
    let agent = Agent::start_cloud(dir.path(), "agent", &sim, &token, &[]).await;
    let dp = Dataplane::start(dir.path(), "dp", &agent.unix_target()).await;
    dp.wait_ready().await;
    let address = dp.listen.to_string();
    for path in ["/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/x", "/legacy"] {
        dp.wait_deployed(path).await;
    }
    let client = reqwest::Client::new();

    // Unary: grpc-status travels in the trailers; a missing one would fail grpcurl.
    let (ok, out, err) = run_grpcurl(&["-plaintext", &address, "grpc.health.v1.Health/Check"]).await;
    assert!(ok && out.contains("SERVING"), "unary call through the dataplane: {out} {err}");
    // A NOT_FOUND status (in the trailers) comes back as such.
    let (ok, out, err) =
        run_grpcurl(&["-plaintext", "-d", r#"{"service":"nope"}"#, &address, "grpc.health.v1.Health/Check"]).await;
    assert!(!ok && err.contains("NotFound"), "{out} {err}");

    // Streaming both ways: server reflection lists the services and describes one.
    let (ok, out, err) = run_grpcurl(&["-plaintext", &address, "list"]).await;
    assert!(ok && out.contains("grpc.health.v1.Health") && out.contains("hgw.v1.Admin"), "{out} {err}");
    let (ok, out, err) = run_grpcurl(&["-plaintext", &address, "describe", "hgw.v1.RateLimit"]).await;
    assert!(ok && out.contains("service RateLimit"), "{out} {err}");

    // v2 `grpc` endpoint: a plain GET is sent as Gravitee's GrpcConnection sends every call.
    let reply = client.get(dp.url("/legacy/x")).header("content-type", "text/plain").send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let seen: serde_json::Value = reply.json().await.unwrap();
    assert_eq!((seen["method"].as_str(), seen["version"].as_str()), (Some("POST"), Some("HTTP/2.0")), "{seen}");
    assert_eq!(seen["headers"]["content-type"], "application/grpc", "{seen}");
    assert_eq!(seen["headers"]["te"], "trailers", "{seen}");
}
