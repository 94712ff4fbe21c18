//! The body of a request, as [`crate::spin::serve`] reads it: whole, or
//! the reason it is not.

/// Why a request's body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body is longer than the limit (its `Content-Length` says so, or
    /// more bytes came); it was not kept.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body broke off before its end.
    Incomplete,
}

impl BodyError {
    /// The status to answer with: 413 or 400.
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyError::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Incomplete => http::StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            BodyError::Incomplete => f.write_str("the body is incomplete"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A request body: the bytes, or why they were not read.
pub type RequestBody = Result<Vec<u8>, BodyError>;
