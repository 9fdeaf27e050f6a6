//! JSON text sent as a `jsonb` parameter as it is, without going through `serde_json::Value`.
//!
//! The ingest already holds each entry's text (the canonical bytes it hashed, see
//! [`crate::chain::examine_for_storage`]); encoding the parsed entry again would cost as much
//! as parsing it. PostgreSQL still parses and validates the text, as for any `jsonb` input.

use std::error::Error;

use bytes::{BufMut as _, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};

/// The version of the binary `jsonb` format: a byte, then the JSON text.
const JSONB_VERSION: u8 = 1;

/// JSON text for a `jsonb` parameter (or, in a `Vec`, a `jsonb[]` one).
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonbText<'a>(pub &'a [u8]);

impl ToSql for JsonbText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_u8(JSONB_VERSION);
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    accepts!(JSONB);

    to_sql_checked!();
}
