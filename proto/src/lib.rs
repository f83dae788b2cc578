//! Kafka wire-protocol glue for Chronik.
//!
//! The codec itself is the `kafka-protocol` crate; this crate only adds what a
//! broker needs around it and nothing else (no I/O, no runtime):
//! - [`frame`]: turning one request frame into a header plus a typed request,
//!   and a typed response back into a length-prefixed frame;
//! - [`batch`]: reading and checking RecordBatch v2 headers without decoding
//!   the records, so batches can be stored exactly as the client sent them;
//! - [`api`]: the table of API keys and versions Chronik implements, which is
//!   what ApiVersions advertises and what the frame decoder accepts.

pub mod api;
pub mod batch;
pub mod frame;
pub mod records;

pub use kafka_protocol;
pub use kafka_protocol::error::ResponseError;

/// The Kafka error code for `e`, for the protocol edge.
pub const fn code(e: ResponseError) -> i16 {
    e.code()
}

/// The error code Kafka uses for "no error".
pub const NONE: i16 = 0;

/// The gRPC services (`proto/chronik/v1/*.proto`), real or simulated to
/// match the build (feature `grpc`).
#[cfg(feature = "grpc")]
pub mod grpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("chronik.v1");
}
