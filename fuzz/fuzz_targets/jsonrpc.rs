//! One line from a client, any bytes: the server's parser accepts it or says why, and either
//! way what goes back is one line a client reads with the same id and code; an accepted
//! request re-encodes to itself, and its params decode (or are refused with the offending field
//! named) for every method. The client's own parser takes the same bytes without panicking.
#![no_main]

use atlasbridge_protocol::jsonrpc::{
    Id, Incoming, OutgoingRequest, Response, ServerMessage, decode_params, parse_incoming,
    parse_server_message,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject, methods};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::Value;

fuzz_target!(|line: &[u8]| {
    let _ = parse_server_message(line);
    match parse_incoming(line) {
        Err(rejection) => {
            assert!(matches!(
                rejection.error.code,
                ErrorCode::ParseError | ErrorCode::InvalidRequest
            ));
            round_trip_reply(Response::error(rejection.id.clone(), rejection.error));
        }
        Ok(Incoming::Request(request)) => {
            let out = one_line(&OutgoingRequest::new(
                request.id.clone(),
                &request.method,
                request.params.clone(),
            ));
            assert_eq!(
                parse_incoming(&out),
                Ok(Incoming::Request(request.clone())),
                "{}",
                String::from_utf8_lossy(&out)
            );
            decode_all(&request.params);
            let echo = Response::success(request.id.clone(), &request.params)
                .expect("a JSON value serialises");
            round_trip_reply(echo);
            round_trip_reply(Response::error(
                request.id,
                ErrorObject::new(ErrorCode::MethodNotFound, request.method),
            ));
        }
        Ok(Incoming::Notification(notification)) => {
            let mut outgoing =
                OutgoingRequest::new(Id::Null, &notification.method, notification.params.clone());
            outgoing.id = None;
            let out = one_line(&outgoing);
            assert_eq!(
                parse_incoming(&out),
                Ok(Incoming::Notification(notification.clone()))
            );
            decode_all(&notification.params);
        }
    }
});

fn one_line<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let out = serde_json::to_vec(value).expect("serialises");
    assert!(!out.contains(&b'\n'), "{}", String::from_utf8_lossy(&out));
    out
}

/// The reply is one line, and the client reads back the id and the outcome that were sent.
fn round_trip_reply(response: Response) {
    let out = one_line(&response);
    let text = String::from_utf8_lossy(&out);
    match parse_server_message(&out) {
        Ok(ServerMessage::Response { id, outcome }) => {
            assert_eq!(id, response.id, "{text}");
            match (outcome, &response.outcome) {
                (Ok(got), Ok(sent)) => {
                    let sent: Value = serde_json::from_str(sent.get()).expect("raw JSON");
                    assert_eq!(got, sent, "{text}");
                }
                (Err(got), Err(sent)) => assert_eq!(&got, sent, "{text}"),
                (got, _) => panic!("outcome changed: {got:?} from {text}"),
            }
        }
        other => panic!("a reply the client cannot read: {other:?} from {text}"),
    }
}

fn decode_all(params: &Option<Value>) {
    decode::<methods::HelloParams>(params);
    decode::<methods::ReadParams>(params);
    decode::<methods::SubscribeParams>(params);
    decode::<methods::RepairParams>(params);
    decode::<methods::RecordParams>(params);
    decode::<methods::EvaluateParams>(params);
    decode::<methods::PolicyReloadParams>(params);
    decode::<methods::SessionStartParams>(params);
    decode::<methods::SessionEndParams>(params);
    decode::<methods::SessionShowParams>(params);
    decode::<methods::PinParams>(params);
    decode::<methods::UnpinParams>(params);
    decode::<methods::PolicyAcceptParams>(params);
    decode::<methods::CloudPolicyPushParams>(params);
    decode::<methods::CloudPolicyPullParams>(params);
    decode::<methods::CloudTestParams>(params);
}

/// Decodes, or refuses with -32602 naming a field (which is `""` for a member named `""`).
fn decode<P: DeserializeOwned>(params: &Option<Value>) {
    if let Err(e) = decode_params::<P>(params.clone()) {
        assert_eq!(e.code, ErrorCode::InvalidParams);
        let field = e.data.as_ref().and_then(|d| d["field"].as_str());
        assert!(field.is_some(), "{e:?}");
    }
}
