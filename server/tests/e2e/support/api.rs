//! A client of the people's API over real HTTP: sessions by bearer or by cookie (with or
//! without the CSRF header), and every answer kept whole (status, headers, JSON body).

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{DEADLINE, TestServer};

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error envelope's code.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Every `Set-Cookie`.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// Asserts an error envelope with `status` and `code`, whose request id is the header's.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{:?}",
            self.body
        );
        let request_id = self.header("x-request-id").expect("x-request-id");
        assert_eq!(self.body["request_id"], request_id.as_str());
        assert!(self.body["error"].is_string() && self.body["details"].is_object());
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The session cookie, and the CSRF header when given.
    Cookie(&'a str, Option<&'a str>),
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub csrf: String,
    pub user_id: String,
}

impl Session {
    pub fn bearer(&self) -> Auth<'_> {
        Auth::Bearer(&self.token)
    }
}

/// The people's API of one server.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(server: &TestServer) -> Self {
        Self {
            base: server.http_url(""),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(DEADLINE)
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Any request.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        match auth {
            Auth::None => {}
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Cookie(token, csrf) => {
                request = request.header("cookie", format!("atlasbridge_session={token}"));
                if let Some(csrf) = csrf {
                    request = request.header("x-csrf-token", csrf);
                }
            }
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.call(Method::GET, path, auth, None, &[]).await
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>, body: Value) -> Answer {
        self.call(Method::POST, path, auth, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, auth: Auth<'_>, body: Value) -> Answer {
        self.call(Method::PATCH, path, auth, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.call(Method::DELETE, path, auth, None, &[]).await
    }

    pub async fn login_answer(&self, org: &str, email: &str, password: &str) -> Answer {
        self.post(
            "/v1/auth/login",
            Auth::None,
            json!({"org_id": org, "email": email, "password": password}),
        )
        .await
    }

    /// Logs in, or the test fails.
    pub async fn login(&self, org: &str, email: &str, password: &str) -> Session {
        let answer = self.login_answer(org, email, password).await;
        assert_eq!(answer.status, 200, "login {email}: {:?}", answer.body);
        Session {
            token: answer.body["session_token"].as_str().unwrap().to_owned(),
            csrf: answer.body["csrf_token"].as_str().unwrap().to_owned(),
            user_id: answer.body["user"]["user_id"].as_str().unwrap().to_owned(),
        }
    }
}

/// A path segment, percent-encoded (runtime ids hold `:`; session ids may hold anything).
pub fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
