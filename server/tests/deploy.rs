//! The deployment files under `deploy/` against the server they deploy: every YAML file parses
//! (the Helm templates after a small rendering with the chart's own values), every
//! `ATLASBRIDGE_SERVER_*` name they use is one the config loader reads, and every configuration
//! they give the server loads and is enough to serve.
//!
//! The rendering is not Helm: lines that are only a template action (`if`, `with`, `end`,
//! `toYaml | nindent`) are dropped, and `{{ .Values.x }}` is replaced by the value in
//! `values.yaml`, quoted when the template says `| quote`. That is enough to parse what the
//! chart produces with its defaults and to catch a reference to a value that does not exist;
//! `helm lint` and `helm template` remain the chart's full check (docs/server-deploy.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use atlasbridge_server::config::{Config, ENV_OVERRIDES};
use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

/// The variable that names the config file (read by the command line, not the loader).
const CONFIG_VARIABLE: &str = "ATLASBRIDGE_SERVER_CONFIG";
/// The log filter.
const LOG_VARIABLE: &str = "ATLASBRIDGE_LOG";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/atlasbridge-server")
}

/// Every file under `dir`, recursively, in name order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// The YAML documents of `text` as JSON values, built from `saphyr-parser`'s events (the
/// parser the policy loader uses): anchors and aliases resolved, plain scalars read with the
/// core schema, a repeated key refused.
fn parse(path: &Path, text: &str) -> Vec<Value> {
    let fail = |why: String| -> ! { panic!("{} does not parse: {why}\n{text}", path.display()) };
    enum Frame {
        Seq(Vec<Value>, usize),
        Map(Map<String, Value>, Option<String>, usize),
    }
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: BTreeMap<usize, Value> = BTreeMap::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, _) = next.unwrap_or_else(|e| fail(e.to_string()));
        let (node, anchor) = match event {
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(Map::new(), None, anchor));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(items, anchor)) => (Value::Array(items), anchor),
                Some(Frame::Map(map, _, anchor)) => (Value::Object(map), anchor),
                None => fail("unbalanced collection".to_owned()),
            },
            Event::Scalar(text, style, anchor, _) => (scalar(&text, style), anchor),
            Event::Alias(id) => (
                anchors
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| fail(format!("unknown anchor {id}"))),
                0,
            ),
            _ => continue,
        };
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => documents.push(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(map, key, _)) => match key.take() {
                None => *key = Some(text_of(&node).unwrap_or_else(|| node.to_string())),
                Some(name) => {
                    if map.insert(name.clone(), node).is_some() {
                        fail(format!("the key {name} is repeated"));
                    }
                }
            },
        }
    }
    documents
}

/// A scalar with the YAML 1.2 core schema: only plain scalars are numbers, booleans or null.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// The names the server accepts from its environment.
fn known_variables() -> BTreeSet<&'static str> {
    ENV_OVERRIDES
        .iter()
        .map(|(variable, _)| *variable)
        .chain([CONFIG_VARIABLE, LOG_VARIABLE])
        .collect()
}

/// Every `ATLASBRIDGE_SERVER_*` word in `text`.
fn server_variables_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ATLASBRIDGE_SERVER_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        found.insert(word);
    }
    found
}

fn get<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    node.as_object()?.get(key)
}

/// A scalar as the text a template or a config would see.
fn text_of(node: &Value) -> Option<String> {
    match node {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every `env:` list of Kubernetes containers in `node`: (name, literal value if any).
fn container_env(node: &Value, out: &mut Vec<(String, Option<String>)>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "env"
                    && let Value::Array(items) = value
                {
                    for item in items {
                        if let Some(name) = get(item, "name").and_then(text_of) {
                            out.push((name, get(item, "value").and_then(text_of)));
                        }
                    }
                }
                container_env(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| container_env(item, out)),
        _ => {}
    }
}

/// `values.yaml`'s node at `path` (`a.b.c`).
fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |node, key| get(node, key))
}

/// The small rendering of a chart template (see the module documentation); `Err` names a
/// `.Values` reference that `values.yaml` does not have.
fn render(template: &str, values: &Value, chart: &Value) -> Result<String, String> {
    // Every reference must exist, also in the action lines that are dropped.
    for reference in template.split(".Values.").skip(1) {
        let path: String = reference
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        let path = path.trim_end_matches('.');
        if value_at(values, path).is_none() {
            return Err(format!(".Values.{path} is not in values.yaml"));
        }
    }
    let mut out = String::new();
    for line in template.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed.matches("{{").count() == 1
        {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| format!("unclosed action in: {line}"))?;
            let action = rest[start + 2..start + end]
                .trim_matches('-')
                .trim()
                .to_owned();
            out.push_str(&evaluate(&action, values, chart));
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

fn evaluate(action: &str, values: &Value, chart: &Value) -> String {
    let mut stages = action.split('|').map(str::trim);
    let head = stages.next().unwrap_or_default();
    let value = if let Some(path) = head.strip_prefix(".Values.") {
        value_at(values, path).and_then(text_of).unwrap_or_default()
    } else if let Some(member) = head.strip_prefix(".Chart.") {
        let key = match member {
            "Name" => "name",
            "Version" => "version",
            _ => "appVersion",
        };
        get(chart, key).and_then(text_of).unwrap_or_default()
    } else if head.starts_with(".Release.") {
        "release".to_owned()
    } else {
        // An include or a function: a name-shaped stand-in.
        "atlasbridge-server-rendered".to_owned()
    };
    if stages.any(|stage| stage == "quote") {
        format!("\"{value}\"")
    } else {
        value
    }
}

/// What a config file and environment give the server: loaded, and checked as `serve` does.
fn check_config(what: &str, file: Option<&str>, env: &BTreeMap<String, String>) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = file.map(|text| {
        let path = dir.path().join("server.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let config = Config::load(path.as_deref(), |name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("{what}: the server refuses its config: {e}"));
    config
        .check_for_serving()
        .unwrap_or_else(|e| panic!("{what}: not enough to serve: {e}"));
    config
}

fn assert_known(what: &str, names: impl IntoIterator<Item = String>) {
    let known = known_variables();
    for name in names {
        if name.starts_with("ATLASBRIDGE_") {
            assert!(
                known.contains(name.as_str()),
                "{what} sets {name}, which the server does not read (it reads {known:?})"
            );
        }
    }
}

#[test]
fn every_yaml_file_parses_and_every_server_variable_is_one_the_server_reads() {
    let chart = chart_dir();
    let values = parse(
        &chart.join("values.yaml"),
        &std::fs::read_to_string(chart.join("values.yaml")).unwrap(),
    )
    .remove(0);
    let chart_yaml = parse(
        &chart.join("Chart.yaml"),
        &std::fs::read_to_string(chart.join("Chart.yaml")).unwrap(),
    )
    .remove(0);
    let mut yaml_files = 0;
    for path in files_under(&deploy_dir()) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_known(&path.display().to_string(), server_variables_in(&text));
        if !is_yaml(&path) {
            continue;
        }
        yaml_files += 1;
        let is_template = path.parent().is_some_and(|p| p.ends_with("templates"));
        let text = if is_template {
            render(&text, &values, &chart_yaml)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        } else {
            text
        };
        let documents = parse(&path, &text);
        let mut env = Vec::new();
        for document in &documents {
            container_env(document, &mut env);
        }
        assert_known(
            &path.display().to_string(),
            env.into_iter().map(|(name, _)| name),
        );
    }
    // The compose file, the chart's metadata and values, and its six manifests.
    assert!(
        yaml_files >= 9,
        "only {yaml_files} YAML files under deploy/"
    );
}

#[test]
fn the_charts_config_and_environment_load_and_are_enough_to_serve() {
    let chart = chart_dir();
    let values = parse(
        &chart.join("values.yaml"),
        &std::fs::read_to_string(chart.join("values.yaml")).unwrap(),
    )
    .remove(0);
    let chart_yaml = parse(
        &chart.join("Chart.yaml"),
        &std::fs::read_to_string(chart.join("Chart.yaml")).unwrap(),
    )
    .remove(0);
    let rendered = |name: &str| {
        let text = std::fs::read_to_string(chart.join("templates").join(name)).unwrap();
        let text = render(&text, &values, &chart_yaml).unwrap();
        parse(Path::new(name), &text).remove(0)
    };
    let config_map = rendered("configmap.yaml");
    let toml = get(&config_map, "data")
        .and_then(|data| get(data, "server.toml"))
        .and_then(text_of)
        .expect("server.toml in the ConfigMap");
    // The Deployment's environment, with the Secrets' values standing in.
    let deployment = rendered("deployment.yaml");
    let mut env = Vec::new();
    container_env(&deployment, &mut env);
    let env: BTreeMap<String, String> = env
        .into_iter()
        .map(|(name, value)| {
            let value = value.unwrap_or_else(|| match name.as_str() {
                "ATLASBRIDGE_SERVER_JWT_SECRET" => {
                    "a-jwt-secret-from-a-kubernetes-secret-0123456789".to_owned()
                }
                "ATLASBRIDGE_SERVER_OIDC_CLIENT_SECRET" => "an-oidc-client-secret".to_owned(),
                _ => "postgres://atlasbridge_app:secret@db:5432/atlasbridge".to_owned(),
            });
            (name, value)
        })
        .collect();
    for required in [
        CONFIG_VARIABLE,
        "ATLASBRIDGE_SERVER_DATABASE_URL",
        "ATLASBRIDGE_SERVER_JWT_SECRET",
        "ATLASBRIDGE_SERVER_SIGNING_KEY_FILE",
    ] {
        assert!(
            env.contains_key(required),
            "the Deployment does not set {required}"
        );
    }
    let config = check_config("the chart", Some(&toml), &env);
    assert_eq!(
        config.listen.port(),
        8480,
        "the container port and the probes' port"
    );
    assert_eq!(
        config.runtime.signing_key_file,
        PathBuf::from(&env["ATLASBRIDGE_SERVER_SIGNING_KEY_FILE"])
    );
    assert_eq!(config.database.pool_size, 16);
    assert!(
        config.people.cookie_secure,
        "people reach the chart through TLS"
    );
    // The [oidc] section (rendered here: action lines are dropped) is one the server accepts.
    let oidc = config.oidc.as_ref().expect("the [oidc] section");
    assert_eq!(oidc.org_id, "acme");
    // The signing key's mount holds the file the server is told to read.
    let mounted = env["ATLASBRIDGE_SERVER_SIGNING_KEY_FILE"].clone();
    let dir = Path::new(&mounted)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let deployment_text = std::fs::read_to_string(chart.join("templates/deployment.yaml")).unwrap();
    assert!(
        deployment_text.contains(&format!("mountPath: {dir}")),
        "{dir} is not mounted"
    );
    assert!(deployment_text.contains("path: server.key"));
    // The probes are where the server answers them.
    assert!(
        deployment_text.contains("path: /readyz") && deployment_text.contains("path: /healthz")
    );

    // The migration Job has what `migrate` needs: the owner's URL and the app role.
    let job = rendered("migrate-job.yaml");
    let mut job_env = Vec::new();
    container_env(&job, &mut job_env);
    let names: BTreeSet<&str> = job_env.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains("ATLASBRIDGE_SERVER_DATABASE_OWNER_URL"),
        "{names:?}"
    );
    assert!(
        names.contains("ATLASBRIDGE_SERVER_DATABASE_APP_ROLE"),
        "{names:?}"
    );
    assert!(
        !names.contains("ATLASBRIDGE_SERVER_JWT_SECRET"),
        "the Job needs no secret but the owner's"
    );
}

/// `${VAR}`, `${VAR:?why}` and `${VAR:-default}` replaced by a value long enough for any secret.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        out.push_str("interpolated-value-of-at-least-32-bytes");
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_compose_services_of_the_server_get_a_config_that_loads() {
    let path = deploy_dir().join("docker-compose.yml");
    let compose = parse(&path, &std::fs::read_to_string(&path).unwrap()).remove(0);
    let services = get(&compose, "services").expect("services");
    let Value::Object(services) = services else {
        panic!("services is not a mapping");
    };
    let mut replicas = 0;
    let mut migrate = false;
    for (name, service) in services {
        let name = name.clone();
        let image = get(service, "image").and_then(text_of).unwrap_or_default();
        if !image.starts_with("atlasbridge-server") {
            continue;
        }
        let env: BTreeMap<String, String> = match get(service, "environment") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), interpolate(&text_of(v).unwrap_or_default())))
                .collect(),
            _ => BTreeMap::new(),
        };
        assert_known(&format!("compose service {name}"), env.keys().cloned());
        let command = match get(service, "command") {
            Some(Value::Array(items)) => items.iter().filter_map(text_of).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        match command.first().map(String::as_str) {
            Some("serve") => {
                replicas += 1;
                let config = check_config(&name, None, &env);
                assert_eq!(config.listen.port(), 8480);
                assert!(
                    get(service, "healthcheck").is_some(),
                    "{name} has no health check"
                );
                assert!(
                    config.database.owner_url.is_none(),
                    "{name} must not hold the owner's URL"
                );
            }
            Some("migrate") => {
                migrate = true;
                let config = Config::load(None, |n| env.get(n).cloned()).unwrap();
                assert!(
                    config.database.owner_url.is_some(),
                    "migrate needs the owner's URL"
                );
            }
            other => panic!("{name} runs {other:?}"),
        }
    }
    assert_eq!(
        (replicas, migrate),
        (2, true),
        "two replicas and a migration"
    );
}

#[test]
fn the_systemd_units_config_and_environment_load() {
    let dir = deploy_dir().join("systemd");
    let toml = std::fs::read_to_string(dir.join("server.toml")).unwrap();
    let env: BTreeMap<String, String> = std::fs::read_to_string(dir.join("server.env.example"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    assert_known("server.env.example", env.keys().cloned());
    check_config("the systemd unit", Some(&toml), &env);
    let unit = std::fs::read_to_string(dir.join("atlasbridge-server.service")).unwrap();
    assert!(
        unit.contains(" migrate'")
            && unit.contains("ExecStart=/usr/local/bin/atlasbridge-server serve")
    );
}

#[test]
fn the_renderer_notices_a_missing_value_and_drops_action_lines() {
    let values = parse(Path::new("values"), "a:\n  b: 3\n  name: x\n").remove(0);
    let chart = parse(Path::new("chart"), "name: c\nversion: 1.0.0\n").remove(0);
    let out = render(
        "{{- if .Values.a }}\nn: {{ .Values.a.b }}\nq: {{ .Values.a.name | quote }}\n{{- end }}\n",
        &values,
        &chart,
    )
    .unwrap();
    assert_eq!(out, "n: 3\nq: \"x\"\n");
    assert!(render("x: {{ .Values.a.c }}\n", &values, &chart).is_err());
    assert_eq!(
        server_variables_in("a ATLASBRIDGE_SERVER_LISTEN=1 ATLASBRIDGE_SERVER_X_Y."),
        BTreeSet::from([
            "ATLASBRIDGE_SERVER_LISTEN".to_owned(),
            "ATLASBRIDGE_SERVER_X_Y".to_owned()
        ])
    );
}
