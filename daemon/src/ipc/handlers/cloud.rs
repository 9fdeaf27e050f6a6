//! `cloud.policy_push`, `cloud.policy_pull` and `cloud.witness`: the REST calls run on the
//! uplink's runtime, with its token and the runtime's identity key. `cloud.status` is answered
//! in `mod.rs`.

use atlasbridge_protocol::methods::{
    CloudPolicyPullParams, CloudPolicyPullResult, CloudPolicyPushParams, CloudPolicyPushResult,
    CloudWitnessParams, CloudWitnessResult,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject};

use crate::cloud::registry;
use crate::cloud::witness::{self, WitnessError};
use crate::state::Daemon;

fn not_linked() -> ErrorObject {
    ErrorObject::new(
        ErrorCode::FeatureDisabled,
        "the cloud uplink is not running: set [cloud] enabled = true (and an edition with \
         cloud_control_channel), see `atlasbridge cloud status`",
    )
}

fn failed(message: String) -> ErrorObject {
    ErrorObject::new(ErrorCode::InternalError, format!("cloud: {message}"))
}

pub(super) async fn push(
    daemon: &Daemon,
    params: CloudPolicyPushParams,
) -> Result<CloudPolicyPushResult, ErrorObject> {
    let client = daemon.registry().cloned().ok_or_else(not_linked)?;
    let runtime = client.runtime.clone();
    runtime
        .spawn(async move { registry::push(&client, &params.yaml).await })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
}

pub(super) async fn pull(
    daemon: &Daemon,
    params: CloudPolicyPullParams,
) -> Result<CloudPolicyPullResult, ErrorObject> {
    let client = daemon.registry().cloned().ok_or_else(not_linked)?;
    let runtime = client.runtime.clone();
    runtime
        .spawn(async move { registry::pull(&client, &params.name).await })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
}

pub(super) async fn witness(
    daemon: &Daemon,
    params: CloudWitnessParams,
) -> Result<CloudWitnessResult, ErrorObject> {
    let client = daemon.registry().cloned().ok_or_else(not_linked)?;
    let runtime = client.runtime.clone();
    runtime
        .spawn(async move { witness::query(&client, &params).await })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| match e {
            WitnessError::Query(why) => ErrorObject::invalid_params(why.field(), why.to_string()),
            WitnessError::Cloud(why) => failed(why),
        })
}
