//! Reading a body the gate needs, the same way in both forms: refuse a declared length
//! over the limit before reading a byte, read up to the limit, 413 beyond it, and a
//! clear 400 when the body cannot be read. Adapters only feed the chunks.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::{EndpointRoute, GateResponse};
use crate::gate::GateError;

/// The most the gate reads of an app's answer that it must inspect (a mediated login).
pub const MEDIATED_RESPONSE_LIMIT: usize = 256 * 1024;

/// A request body being read for a gate endpoint; made by
/// [`Front::body_reader`](super::Front::body_reader).
#[derive(Debug)]
pub struct BodyReader {
    route: EndpointRoute,
    limit: usize,
    body: BytesMut,
}

impl BodyReader {
    /// Starts reading the body of a request to `route`: `Ok(None)` when the route takes
    /// no body, the 413 answer when the request declares more than `limit` bytes.
    // The refusal is answered at once, one call up: not worth a box.
    #[allow(clippy::result_large_err)]
    pub(crate) fn start(
        route: EndpointRoute,
        headers: &HeaderMap,
        limit: usize,
    ) -> Result<Option<BodyReader>, GateResponse> {
        if !route.needs_body() {
            return Ok(None);
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Refused before a byte is read: nothing is buffered for a body that will not fit.
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large(route, limit));
        }
        Ok(Some(BodyReader {
            route,
            limit,
            body: BytesMut::new(),
        }))
    }

    /// Adds the next chunk; the 413 answer once the body outgrows the limit.
    #[allow(clippy::result_large_err)] // as in `start`
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), GateResponse> {
        if self.body.len() + chunk.len() > self.limit {
            return Err(too_large(self.route, self.limit));
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    /// The answer for a body that broke off or could not be read.
    pub fn unreadable(self) -> GateResponse {
        self.route.dialect.error(&GateError::InvalidRequest(
            "the request body could not be read".into(),
        ))
    }

    /// The whole body.
    pub fn finish(self) -> Bytes {
        self.body.freeze()
    }
}

fn too_large(route: EndpointRoute, limit: usize) -> GateResponse {
    route.dialect.error(&GateError::PayloadTooLarge { limit })
}
