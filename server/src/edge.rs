//! The last word on every gRPC status the server sends, including those tonic produces before
//! a handler runs: a malformed message is INVALID_ARGUMENT (tonic says INTERNAL), an unknown
//! method says which method and what the server has (tonic says nothing), a request over the
//! size limit is RESOURCE_EXHAUSTED with advice (tonic says OUT_OF_RANGE), and no message is
//! longer than [`MAX_MESSAGE`] bytes, whatever input it repeats.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};

/// Longest status message sent; longer ones are cut (a client's metadata limit is often
/// 8-16 KiB, and a message repeating a megabyte of input is no use to anyone).
pub const MAX_MESSAGE: usize = 1024;

/// Cuts `msg` to at most [`MAX_MESSAGE`] bytes on a character boundary.
pub fn clip_message(msg: &str) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg.to_string();
    }
    let mut end = MAX_MESSAGE - 40;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &msg[..end], msg.len() - end)
}

/// What the status of a response to `path` should say instead, if anything.
fn rewrite(status: &Status, path: &str) -> Option<Status> {
    let msg = status.message();
    let fixed = match status.code() {
        Code::Internal if msg.starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(format!("malformed request message: {msg}"))
        }
        Code::Unimplemented if msg.is_empty() => Status::unimplemented(format!(
            "unknown method {}: this server serves gyre.v1.Collections, gyre.v1.Points, gyre.v1.Search, gyre.v1.Admin, grpc.health.v1.Health and reflection (`grpcurl -plaintext HOST:PORT list`)",
            crate::edge::clip_message(path)
        )),
        Code::OutOfRange | Code::ResourceExhausted if msg.contains("too large") => {
            Status::resource_exhausted(format!(
                "{msg} (the server's --max-request-bytes): send bulk loads through Points.UpsertStream or in smaller batches"
            ))
        }
        _ if msg.len() > MAX_MESSAGE => Status::new(status.code(), msg),
        _ => return None,
    };
    let msg = clip_message(fixed.message());
    Some(Status::new(fixed.code(), msg))
}

/// The tower layer applying [`rewrite`] to responses whose status travels in the headers
/// (every error of a unary-response RPC: tonic answers those trailers-only).
#[derive(Debug, Clone, Copy, Default)]
pub struct EdgeLayer;

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner }
    }
}

/// See [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(status) = Status::from_header_map(resp.headers())
                && status.code() != Code::Ok
                && let Some(fixed) = rewrite(&status, &path)
            {
                let headers = resp.headers_mut();
                headers.remove("grpc-message");
                let _ = fixed.add_header(headers);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_rewritten_and_clipped() {
        let s = rewrite(
            &Status::internal("failed to decode Protobuf message: invalid wire type"),
            "/gyre.v1.Points/Upsert",
        )
        .unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = rewrite(&Status::unimplemented(""), "/gyre.v1.Points/Nope").unwrap();
        assert!(
            s.message().contains("/gyre.v1.Points/Nope"),
            "{}",
            s.message()
        );
        let long = "x".repeat(1 << 20);
        let s = rewrite(&Status::not_found(long), "/p").unwrap();
        assert!(s.message().len() <= MAX_MESSAGE, "{}", s.message().len());
        assert_eq!(s.code(), Code::NotFound);
        assert!(rewrite(&Status::not_found("short"), "/p").is_none());
        assert!(clip_message(&"é".repeat(5000)).len() <= MAX_MESSAGE);
    }
}
