//! [`ResponseFuture`]: what [`OtpService`](super::OtpService) returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use super::OtpBody;

/// A boxed response future, as each kind of route produces it.
pub(crate) type BoxResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<OtpBody<B>>, E>> + Send>>;

/// The response future of [`OtpService`](super::OtpService).
pub struct ResponseFuture<B, E> {
    future: BoxResponse<B, E>,
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(future: BoxResponse<B, E>) -> Self {
        ResponseFuture { future }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<OtpBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
