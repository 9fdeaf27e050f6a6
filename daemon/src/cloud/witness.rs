//! `cloud.witness`: what the cloud witnessed of this runtime's chain, asked with the uplink's
//! token (`POST {api_base}/v1/witness`), so that `atlasbridge trace integrity-check
//! --against-cloud` can compare the local trace with it. The CLI never holds the API key or a
//! token: it asks the daemon, and the daemon asks the cloud about itself only.

use atlasbridge_protocol::cloud::witness::{QueryError, WitnessAnswer, WitnessQuery};

use super::registry::{RegistryClient, post_json};

/// Why a witness query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The query is beyond the limits every cloud applies: refused before anything is sent.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The cloud could not be asked, refused, or answered something else than asked.
    #[error("{0}")]
    Cloud(String),
}

/// Asks the cloud; the answer must be about this runtime and the stream asked for.
pub async fn query(
    client: &RegistryClient,
    query: &WitnessQuery,
) -> Result<WitnessAnswer, WitnessError> {
    query.seqs_wanted()?;
    let answer: WitnessAnswer = post_json(&client.fetcher, "v1/witness", query)
        .await
        .map_err(WitnessError::Cloud)?;
    if answer.runtime_id != client.runtime_id || answer.stream != query.stream {
        return Err(WitnessError::Cloud(format!(
            "the cloud answered about {} ({}), not about this runtime's {}",
            answer.runtime_id,
            answer.stream.name(),
            query.stream.name()
        )));
    }
    Ok(answer)
}
