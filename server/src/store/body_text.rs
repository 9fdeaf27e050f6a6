//! An entry's stored text sent as a `text` parameter as it is, without going through
//! `serde_json::Value` or a UTF-8 check.
//!
//! The ingest already holds each entry's text (the canonical bytes it hashed, see
//! [`crate::chain::examine_for_storage`]): written from JSON values, so UTF-8 by construction,
//! and PostgreSQL checks the encoding of every `text` input again anyway. Encoding the parsed
//! entry a second time would cost as much as parsing it.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};

/// JSON text for a `text` parameter (or, in a `Vec`, a `text[]` one).
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyText<'a>(pub &'a [u8]);

impl ToSql for BodyText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // The binary form of `text` is its bytes.
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    accepts!(TEXT);

    to_sql_checked!();
}
