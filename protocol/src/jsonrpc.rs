//! JSON-RPC 2.0 envelopes, and the parsing of one incoming line into a request or a precise
//! rejection.
//!
//! Parsing is done in two steps on purpose: first into a generic JSON value, so that a batch
//! (an array) or a request with a malformed member can still be answered with the right code
//! and, where it was readable, the request's own `id`.

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ErrorCode;

/// A request id: a number, a string, or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A numeric id, echoed exactly as sent.
    Number(serde_json::Number),
    /// A string id.
    String(String),
    /// `null`: used in replies to lines whose id could not be read.
    Null,
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Self::Number(n.into())
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Null => f.write_str("null"),
        }
    }
}

/// The `error` member of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// One sentence for a person.
    pub message: String,
    /// Machine-readable detail (`field`, `feature`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error without data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches `data`.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32602 naming the offending field in `data.field`.
    pub fn invalid_params(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
            .with_data(serde_json::json!({ "field": field }))
    }
}

impl std::fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}

/// A request that expects a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the response.
    pub id: Id,
    /// The method name, e.g. `daemon.status`.
    pub method: String,
    /// `params`, if given (always an object or an array).
    pub params: Option<Value>,
}

/// A message without an `id`: no response is sent, whatever happens.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The method name.
    pub method: String,
    /// `params`, if given.
    pub params: Option<Value>,
}

/// One accepted incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Needs a response.
    Request(Request),
    /// Needs none.
    Notification(Notification),
}

/// Why an incoming line was not accepted, and what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The line's `id` when it could be read, else `null`.
    pub id: Id,
    /// The error to send back.
    pub error: ErrorObject,
}

impl Rejection {
    fn new(id: Id, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            error: ErrorObject::new(code, message),
        }
    }
}

/// Parses one line received by a server.
pub fn parse_incoming(line: &[u8]) -> Result<Incoming, Rejection> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        Rejection::new(Id::Null, ErrorCode::ParseError, format!("parse error: {e}"))
    })?;
    let mut object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(Rejection::new(
                Id::Null,
                ErrorCode::InvalidRequest,
                "batch requests are not supported: send one request per line",
            ));
        }
        _ => {
            return Err(Rejection::new(
                Id::Null,
                ErrorCode::InvalidRequest,
                "a request must be a JSON object",
            ));
        }
    };
    let id = match object.remove("id") {
        None => None,
        Some(Value::Null) => Some(Id::Null),
        Some(Value::Number(n)) => Some(Id::Number(n)),
        Some(Value::String(s)) => Some(Id::String(s)),
        Some(_) => {
            return Err(Rejection::new(
                Id::Null,
                ErrorCode::InvalidRequest,
                "\"id\" must be a number, a string or null",
            ));
        }
    };
    let reject = |message: &str| {
        Rejection::new(
            id.clone().unwrap_or(Id::Null),
            ErrorCode::InvalidRequest,
            message,
        )
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(reject("\"jsonrpc\" must be \"2.0\""));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return Err(reject("\"method\" must be a string")),
        None => return Err(reject("\"method\" is missing")),
    };
    let params = match object.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return Err(reject("\"params\" must be an object or an array")),
    };
    Ok(match id {
        Some(id) => Incoming::Request(Request { id, method, params }),
        None => Incoming::Notification(Notification { method, params }),
    })
}

/// Decodes a request's params into their typed form; absent params read as `{}`.
pub fn decode_params<P: DeserializeOwned>(params: Option<Value>) -> Result<P, ErrorObject> {
    let value = params.unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let text = e.into_inner().to_string();
        let field = if path.is_empty() || path == "." {
            field_of_serde_error(&text).unwrap_or("params").to_owned()
        } else {
            path
        };
        ErrorObject::invalid_params(&field, format!("invalid params: {field}: {text}"))
    })
}

/// serde names the member in its messages as `` `name` ``; that is the field a client needs.
fn field_of_serde_error(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

/// A response as the server writes it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request's id.
    pub id: Id,
    /// The serialised result, or the error.
    pub outcome: Result<Box<RawValue>, ErrorObject>,
}

impl Response {
    /// A success with an already-typed result.
    pub fn success<T: Serialize + ?Sized>(id: Id, result: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            id,
            outcome: Ok(serde_json::value::to_raw_value(result)?),
        })
    }

    /// A failure.
    pub fn error(id: Id, error: ErrorObject) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("jsonrpc", "2.0")?;
        map.serialize_entry("id", &self.id)?;
        match &self.outcome {
            Ok(result) => map.serialize_entry("result", result)?,
            Err(error) => map.serialize_entry("error", error)?,
        }
        map.end()
    }
}

/// A request as a client writes it.
#[derive(Debug, Serialize)]
pub struct OutgoingRequest<'a, P: Serialize> {
    /// Always `"2.0"`.
    pub jsonrpc: &'static str,
    /// Omitted for a notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// The method name.
    pub method: &'a str,
    /// The parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<P>,
}

impl<'a, P: Serialize> OutgoingRequest<'a, P> {
    /// A request with an id.
    pub fn new(id: Id, method: &'a str, params: Option<P>) -> Self {
        Self {
            jsonrpc: "2.0",
            id: Some(id),
            method,
            params,
        }
    }
}

/// A server-initiated notification as the server writes it (`trace.entry`, …).
#[derive(Debug, Serialize)]
pub struct OutgoingNotification<'a, P: Serialize> {
    /// Always `"2.0"`.
    pub jsonrpc: &'static str,
    /// The notification's method.
    pub method: &'a str,
    /// Its payload.
    pub params: P,
}

impl<'a, P: Serialize> OutgoingNotification<'a, P> {
    /// A notification.
    pub fn new(method: &'a str, params: P) -> Self {
        Self {
            jsonrpc: "2.0",
            method,
            params,
        }
    }
}

/// One message received by a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The answer to a request.
    Response {
        /// The request's id.
        id: Id,
        /// Its result or error.
        outcome: Result<Value, ErrorObject>,
    },
    /// A server-initiated notification.
    Notification(Notification),
}

/// Members whose presence matters even when their value is `null` (`"id": null`,
/// `"result": null`): absent reads as `None`, present as `Some`.
#[derive(Deserialize)]
struct RawServerMessage {
    jsonrpc: String,
    #[serde(default, deserialize_with = "present")]
    id: Option<Id>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// What went wrong reading a server's line.
#[derive(Debug, thiserror::Error)]
pub enum ServerMessageError {
    /// Not JSON, or not the expected shape.
    #[error("the daemon sent a malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// JSON, but not a JSON-RPC 2.0 response or notification.
    #[error("the daemon sent a message that is neither a response nor a notification")]
    NotJsonRpc,
}

/// Parses one line received by a client.
pub fn parse_server_message(line: &[u8]) -> Result<ServerMessage, ServerMessageError> {
    let raw: RawServerMessage = serde_json::from_slice(line)?;
    if raw.jsonrpc != "2.0" {
        return Err(ServerMessageError::NotJsonRpc);
    }
    match (raw.id, raw.method, raw.result, raw.error) {
        (Some(id), None, Some(result), None) => Ok(ServerMessage::Response {
            id,
            outcome: Ok(result),
        }),
        (Some(id), None, None, Some(error)) => Ok(ServerMessage::Response {
            id,
            outcome: Err(error),
        }),
        (None, Some(method), None, None) => Ok(ServerMessage::Notification(Notification {
            method,
            params: raw.params,
        })),
        _ => Err(ServerMessageError::NotJsonRpc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn rejected(line: &str) -> Rejection {
        parse_incoming(line.as_bytes()).unwrap_err()
    }

    #[rstest]
    #[case::garbage("{nope", -32700)]
    #[case::not_utf8_json("\u{0}", -32700)]
    #[case::batch(r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#, -32600)]
    #[case::empty_batch("[]", -32600)]
    #[case::scalar("42", -32600)]
    #[case::bad_id_type(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, -32600)]
    fn rejections_with_a_null_id(#[case] line: &str, #[case] code: i64) {
        let r = rejected(line);
        assert_eq!(r.error.code.code(), code, "{line}");
        assert_eq!(r.id, Id::Null);
    }

    #[rstest]
    #[case::wrong_version(r#"{"jsonrpc":"1.0","id":5,"method":"x"}"#)]
    #[case::missing_method(r#"{"jsonrpc":"2.0","id":5}"#)]
    #[case::method_not_string(r#"{"jsonrpc":"2.0","id":5,"method":7}"#)]
    #[case::scalar_params(r#"{"jsonrpc":"2.0","id":5,"method":"x","params":3}"#)]
    fn invalid_requests_keep_their_id(#[case] line: &str) {
        let r = rejected(line);
        assert_eq!(r.error.code, ErrorCode::InvalidRequest);
        assert_eq!(r.id, Id::from(5));
    }

    #[test]
    fn requests_and_notifications() {
        let req = parse_incoming(br#"{"jsonrpc":"2.0","id":"a","method":"m","params":{"k":1}}"#);
        assert_eq!(
            req.unwrap(),
            Incoming::Request(Request {
                id: Id::String("a".into()),
                method: "m".into(),
                params: Some(json!({"k": 1}))
            })
        );
        let note = parse_incoming(br#"{"jsonrpc":"2.0","method":"m"}"#).unwrap();
        assert!(matches!(note, Incoming::Notification(n) if n.method == "m"));
        let null_id = parse_incoming(br#"{"jsonrpc":"2.0","id":null,"method":"m"}"#).unwrap();
        assert!(matches!(null_id, Incoming::Request(r) if r.id == Id::Null));
    }

    #[test]
    fn numeric_ids_are_echoed_exactly() {
        let Incoming::Request(req) =
            parse_incoming(br#"{"jsonrpc":"2.0","id":1.50,"method":"m"}"#).unwrap()
        else {
            panic!("not a request")
        };
        let response = Response::success(req.id, &json!(true)).unwrap();
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"jsonrpc":"2.0","id":1.5,"result":true}"#
        );
    }

    #[test]
    fn responses_serialise_as_json_rpc() {
        let ok = Response::success(Id::from(3), &json!({"a": 1})).unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"jsonrpc":"2.0","id":3,"result":{"a":1}}"#
        );
        let err = Response::error(Id::Null, ErrorObject::invalid_params("seq", "bad"));
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"bad","data":{"field":"seq"}}}"#
        );
    }

    #[test]
    fn server_messages_parse_both_ways() {
        let ok = parse_server_message(br#"{"jsonrpc":"2.0","id":3,"result":null}"#).unwrap();
        assert_eq!(
            ok,
            ServerMessage::Response {
                id: Id::from(3),
                outcome: Ok(Value::Null)
            }
        );
        let err = parse_server_message(
            br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}"#,
        )
        .unwrap();
        assert!(
            matches!(err, ServerMessage::Response { outcome: Err(e), .. } if e.code == ErrorCode::MethodNotFound)
        );
        let note = parse_server_message(br#"{"jsonrpc":"2.0","method":"trace.entry","params":{}}"#)
            .unwrap();
        assert!(matches!(note, ServerMessage::Notification(n) if n.method == "trace.entry"));
        assert!(parse_server_message(br#"{"jsonrpc":"2.0"}"#).is_err());
        assert!(parse_server_message(br#"{"jsonrpc":"2.0","id":1}"#).is_err());
        let refused = parse_server_message(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32007,"message":"no"}}"#,
        )
        .unwrap();
        assert!(matches!(
            refused,
            ServerMessage::Response {
                id: Id::Null,
                outcome: Err(_)
            }
        ));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        protocol: u32,
    }

    #[test]
    fn invalid_params_name_the_field() {
        let e = decode_params::<Params>(Some(json!({"protocol": "one"}))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert_eq!(e.data, Some(json!({"field": "protocol"})));
        let e = decode_params::<Params>(Some(json!({}))).unwrap_err();
        assert_eq!(e.data, Some(json!({"field": "protocol"})));
        let e = decode_params::<Params>(Some(json!({"protocol": 1, "extra": 2}))).unwrap_err();
        assert_eq!(e.data, Some(json!({"field": "extra"})));
    }
}
