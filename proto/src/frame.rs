//! One Kafka request frame in, one response frame out.
//!
//! A frame on the wire is `length: i32` followed by `length` bytes. The
//! listener strips the length; [`decode_request`] takes the rest. Errors say
//! whether the client can be answered (we know its correlation id and the
//! API has an error path) or the connection must be closed, as Kafka does.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

use crate::api;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a frame could not be turned into a request.
#[derive(Debug, Error)]
pub enum DecodeFrameError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {api_version} of {api_key:?} (correlation id {correlation_id})")]
    UnsupportedVersion { api_key: ApiKey, api_version: i16, correlation_id: i32 },
    #[error("malformed {api_key:?} v{api_version} request (correlation id {correlation_id}): {reason}")]
    Malformed { api_key: ApiKey, api_version: i16, correlation_id: i32, reason: String },
}

/// Decodes a frame (without its length prefix) into a typed request.
/// Only keys and versions in [`api::SUPPORTED`] are accepted.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeFrameError> {
    if frame.len() < 8 {
        return Err(DecodeFrameError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key)
        .map_err(|_| DecodeFrameError::UnknownApiKey { api_key: raw_key, correlation_id })?;
    if api::supported(api_key).is_none() {
        return Err(DecodeFrameError::UnknownApiKey { api_key: raw_key, correlation_id });
    }
    if !api::is_supported(api_key, api_version) {
        return Err(DecodeFrameError::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let malformed = |reason: String| DecodeFrameError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| malformed(format!("header: {e:#}")))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version)
        .map_err(|e| malformed(format!("body: {e:#}")))?;
    Ok(Request { api_key, api_version, header, body })
}

/// Encodes a response, with its length prefix, for `api_key` at `api_version`.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow_free::Result<BytesMut> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(api_version);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(anyhow_free::Error::from_codec)?;
    body.encode(&mut buf, api_version).map_err(anyhow_free::Error::from_codec)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Encodes a request with its length prefix (used by tests and tools).
pub fn encode_request(header: &RequestHeader, body: &RequestKind) -> anyhow_free::Result<BytesMut> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| anyhow_free::Error(format!("unknown API key {}", header.request_api_key)))?;
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(header.request_api_version))
        .map_err(anyhow_free::Error::from_codec)?;
    body.encode(&mut buf, header.request_api_version).map_err(anyhow_free::Error::from_codec)?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame (without its length prefix); for tests and tools.
pub fn decode_response(
    api_key: ApiKey,
    api_version: i16,
    mut frame: Bytes,
) -> anyhow_free::Result<(i32, ResponseKind)> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(api_version))
        .map_err(anyhow_free::Error::from_codec)?;
    let body = ResponseKind::decode(api_key, &mut frame, api_version)
        .map_err(anyhow_free::Error::from_codec)?;
    if frame.has_remaining() {
        return Err(anyhow_free::Error(format!("{} trailing bytes after response", frame.remaining())));
    }
    Ok((header.correlation_id, body))
}

/// A small error type so this crate's API does not expose `anyhow`.
pub mod anyhow_free {
    /// An encode or decode failure, as text.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("{0}")]
    pub struct Error(pub String);

    impl Error {
        pub(crate) fn from_codec<E: std::fmt::Display>(e: E) -> Error {
            Error(format!("{e:#}"))
        }
    }

    pub type Result<T> = std::result::Result<T, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request(key: ApiKey, version: i16, body: RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut b = encode_request(&header, &body).unwrap();
        b.advance(4);
        b.freeze()
    }

    #[test]
    fn round_trips_every_supported_api_versions_version() {
        for v in 0..=4 {
            let r = decode_request(request(
                ApiKey::ApiVersions,
                v,
                RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ))
            .unwrap();
            assert_eq!(r.api_version, v);
            assert_eq!(r.header.correlation_id, 42);
        }
    }

    #[test]
    fn refuses_unknown_keys_and_versions() {
        let mut f = request(ApiKey::Metadata, 9, RequestKind::Metadata(MetadataRequest::default())).to_vec();
        f[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(f.clone())),
            Err(DecodeFrameError::UnknownApiKey { api_key: 999, correlation_id: 42 })
        ));
        f[0..2].copy_from_slice(&(ApiKey::Metadata as i16).to_be_bytes());
        f[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(f)),
            Err(DecodeFrameError::UnsupportedVersion { api_version: 99, .. })
        ));
        assert!(matches!(decode_request(Bytes::from_static(&[0, 3])), Err(DecodeFrameError::TooShort(2))));
    }

    #[test]
    fn truncated_body_is_malformed_not_a_panic() {
        let f = request(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default()));
        for cut in 8..f.len() {
            let _ = decode_request(f.slice(..cut));
        }
    }
}
