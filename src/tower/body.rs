//! [`OtpBody`]: the one body type the layer deals in, both ways.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body that is either the original one, untouched, or bytes the gate wrote.
    ///
    /// The wrapped service receives its requests with this body (the client's, or the
    /// baanx login the gate rewrote without its `otpCode`), and [`OtpService`] answers
    /// with it (the app's response, or one the gate wrote itself).
    ///
    /// [`OtpService`]: super::OtpService
    pub struct OtpBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Original { #[pin] body: B },
        Written { data: Option<Bytes> },
    }
}

impl<B> OtpBody<B> {
    /// The original body, passed through untouched.
    pub(crate) fn original(body: B) -> Self {
        OtpBody {
            kind: Kind::Original { body },
        }
    }

    /// A body of bytes the gate wrote.
    pub(crate) fn written(data: Bytes) -> Self {
        OtpBody {
            kind: Kind::Written { data: Some(data) },
        }
    }
}

impl<B> std::fmt::Debug for OtpBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Original { .. } => f.write_str("OtpBody::Original"),
            Kind::Written { data } => f
                .debug_struct("OtpBody::Written")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for OtpBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Original { body } => body.poll_frame(cx),
            KindProj::Written { data } => Poll::Ready(
                data.take()
                    .filter(Buf::has_remaining)
                    .map(|data| Ok(Frame::data(data))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Original { body } => body.is_end_stream(),
            Kind::Written { data } => data.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Original { body } => body.size_hint(),
            Kind::Written { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}
