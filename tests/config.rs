//! Config validation as an operator meets it: every problem, with its key path, in one run.

mod common;

use std::process::Command;

use common::*;

/// A valid config with `server` lines added to `[server]` and `rest` appended at the end.
fn config(server: &str, rest: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://127.0.0.1:8443"
{server}

[admin]
listen = "127.0.0.1:9464"

{rest}
"#
    )
}

/// One anonymous route with `extra` lines.
fn route(id: &str, path: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nid = {id:?}\npath = {path:?}\nupstream = {upstream:?}\nallow_anonymous = true\n{extra}\n"
    )
}

fn ok_route() -> String {
    route("a", "/a/mcp", "http://127.0.0.1:3001/mcp", "")
}

/// Asserts that one problem is reported for `path` and that its reason contains `fragment`.
fn assert_problem(problems: &[String], path: &str, fragment: &str) {
    let prefix = format!("{path}: ");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&prefix) && p.contains(fragment)),
        "no problem `{path}: …{fragment}…` among:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_base_config_is_valid() {
    let text = config("", &ok_route());
    mcpgate::config::from_str(&text, std::path::Path::new(".")).expect("base config is valid");
}

#[test]
fn each_bad_value_is_reported_with_its_key_path() {
    let issuer = |body: &str| format!("[[issuers]]\nid = \"idp\"\n{body}\n");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "upstream scheme",
            config(
                "",
                &format!("{}{}", ok_route(), route("b", "/b/mcp", "ftp://x", "")),
            ),
            "routes[1].upstream",
            r#""ftp://x" is not an http(s) URL"#,
        ),
        (
            "listen address",
            config("", &ok_route())
                .replace(r#"listen = "127.0.0.1:8443""#, r#"listen = "localhost""#),
            "server.listen",
            r#""localhost" is not an address:port"#,
        ),
        (
            "public url",
            config("", &ok_route()).replace(
                r#"public_url = "https://127.0.0.1:8443""#,
                r#"public_url = "gateway.example""#,
            ),
            "server.public_url",
            r#""gateway.example" is not an http(s) URL"#,
        ),
        (
            "size unit",
            config(r#"max_body = "1XB""#, &ok_route()),
            "server.max_body",
            r#""1XB" is not a size"#,
        ),
        (
            "duration unit",
            config(
                "",
                &route(
                    "a",
                    "/a/mcp",
                    "http://127.0.0.1:3001/mcp",
                    r#"upstream_timeout = "soon""#,
                ),
            ),
            "routes[0].upstream_timeout",
            r#""soon" is not a duration"#,
        ),
        (
            "bare number duration",
            config(r#"idle_timeout = "30""#, &ok_route()),
            "server.idle_timeout",
            r#""30" is not a duration"#,
        ),
        (
            "dot segment in route path",
            config("", &route("a", "/a/../b", "http://127.0.0.1:3001/mcp", "")),
            "routes[0].path",
            r#""/a/../b" must be an absolute path"#,
        ),
        (
            "duplicate route id",
            config(
                "",
                &format!(
                    "{}{}",
                    ok_route(),
                    route("a", "/other/mcp", "http://127.0.0.1:3001/mcp", "")
                ),
            ),
            "routes[1].id",
            r#""a" is used by an earlier route"#,
        ),
        (
            "duplicate route path",
            config(
                "",
                &format!(
                    "{}{}",
                    ok_route(),
                    route("b", "/a/mcp", "http://127.0.0.1:3001/mcp", "")
                ),
            ),
            "routes[1].path",
            r#""/a/mcp" is used by an earlier route"#,
        ),
        (
            "plain http on a public address",
            config("", &ok_route())
                .replace(r#"listen = "127.0.0.1:8443""#, r#"listen = "0.0.0.0:8443""#),
            "server.tls",
            "required on the non-loopback address 0.0.0.0:8443",
        ),
        (
            "issuer over plain http",
            config(
                "",
                &format!(
                    "{}{}",
                    ok_route(),
                    issuer(r#"issuer = "http://auth.example.com/realms/mcp""#)
                ),
            ),
            "issuers[0].issuer",
            r#""http://auth.example.com/realms/mcp" must be an https URL"#,
        ),
        (
            "symmetric algorithm",
            config(
                "",
                &format!(
                    "{}{}",
                    ok_route(),
                    issuer("issuer = \"https://auth.example.com\"\nalgorithms = [\"HS256\"]")
                ),
            ),
            "issuers[0].algorithms[0]",
            r#""HS256" is symmetric"#,
        ),
        (
            "dev issuer on a public address",
            config(
                "allow_plain_http = true",
                &format!("{}{}", ok_route(), issuer(r#"kind = "dev""#)),
            )
            .replace(r#"listen = "127.0.0.1:8443""#, r#"listen = "0.0.0.0:8443""#),
            "issuers[0].kind",
            "only allowed when server.listen is a loopback address",
        ),
        (
            "route names an unknown issuer",
            config(
                "",
                &route(
                    "a",
                    "/a/mcp",
                    "http://127.0.0.1:3001/mcp",
                    r#"issuers = ["nope"]"#,
                ),
            ),
            "routes[0].issuers[0]",
            r#""nope" is not the id of any [[issuers]] entry"#,
        ),
        (
            "route without any credential source",
            config(
                "",
                "[[routes]]\nid = \"a\"\npath = \"/a/mcp\"\nupstream = \"http://127.0.0.1:3001/mcp\"\n",
            ),
            "routes[0].issuers",
            "allow_anonymous",
        ),
        (
            "session secret env missing",
            config(
                "",
                &format!(
                    "{}\n[session]\nsecret_env = \"MCPGATE_TEST_UNSET_SESSION_SECRET\"\n",
                    ok_route()
                ),
            ),
            "session.secret_env",
            "MCPGATE_TEST_UNSET_SESSION_SECRET is not set",
        ),
        (
            "upstream header secret env missing",
            config(
                "",
                &route(
                    "a",
                    "/a/mcp",
                    "http://127.0.0.1:3001/mcp",
                    r#"upstream_headers = [{ name = "X-Api-Key", value_env = "MCPGATE_TEST_UNSET_API_KEY" }]"#,
                ),
            ),
            "routes[0].upstream_headers[0].value_env",
            "MCPGATE_TEST_UNSET_API_KEY is not set",
        ),
        (
            "api key hash format",
            config(
                "",
                &route(
                    "a",
                    "/a/mcp",
                    "http://127.0.0.1:3001/mcp",
                    "[[routes.api_keys]]\nhash = \"md5:abc\"\nsubject = \"bot\"",
                ),
            ),
            "routes[0].api_keys[0].hash",
            "sha256:",
        ),
        (
            "admin on the public listener",
            config("", &ok_route()).replace(
                r#"listen = "127.0.0.1:9464""#,
                r#"listen = "127.0.0.1:8443""#,
            ),
            "admin.listen",
            "must differ from server.listen",
        ),
    ];
    for (name, text, path, fragment) in &cases {
        let problems = config_error(text);
        assert_problem(&problems, path, fragment);
        assert!(
            problems.iter().all(|p| !p.contains('\n')),
            "{name}: one line per problem: {problems:?}"
        );
    }
}

#[test]
fn unknown_missing_and_mistyped_fields_are_reported_with_their_serde_path() {
    let problems = config_error(&config("bogus_option = 1", &ok_route()));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_problem(
        &problems,
        "server.bogus_option",
        "unknown field `bogus_option`",
    );

    let problems = config_error(&config(
        "",
        &format!(
            "{}{}",
            ok_route(),
            route(
                "b",
                "/b/mcp",
                "http://127.0.0.1:3001/mcp",
                "upstrem_timeout = \"5s\""
            )
        ),
    ));
    assert_problem(&problems, "routes[1].upstrem_timeout", "unknown field");

    let problems = config_error(&config("max_connections = \"many\"", &ok_route()));
    assert_problem(&problems, "server.max_connections", "invalid type");

    let problems = config_error(&config(
        "",
        "[[routes]]\nid = \"a\"\npath = \"/a/mcp\"\nallow_anonymous = true\n",
    ));
    assert_problem(&problems, "routes[0]", "missing field `upstream`");
}

#[test]
fn syntax_error_names_the_line() {
    let problems = config_error(&config("", "[[routes]\nid = \"a\"\n"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("line 10"), "{problems:?}");
}

#[test]
fn several_errors_are_all_listed_in_one_run() {
    let text = config(
        r#"max_body = "1XB"
idle_timeout = "later""#,
        &format!(
            "{}{}[[issuers]]\nid = \"idp\"\nissuer = \"https://auth.example.com\"\nalgorithms = [\"RS256\", \"HS512\"]\n",
            route("a", "/a/../mcp", "ftp://x", ""),
            route(
                "a",
                "/b/mcp",
                "http://127.0.0.1:3001/mcp",
                "issuers = [\"idp\", \"missing\"]\nca_file = \"ca.pem\""
            ),
        ),
    )
    .replace(r#"public_url = "https://127.0.0.1:8443""#, r#"public_url = "nope""#);
    let problems = config_error(&text);
    let expected = [
        ("server.public_url", "\"nope\""),
        ("server.max_body", "\"1XB\""),
        ("server.idle_timeout", "\"later\""),
        ("routes[0].path", "\"/a/../mcp\""),
        ("routes[0].upstream", "\"ftp://x\""),
        ("routes[1].id", "\"a\" is used by an earlier route"),
        ("routes[1].ca_file", "only to an https upstream"),
        ("routes[1].issuers[1]", "\"missing\""),
        ("issuers[0].algorithms[1]", "\"HS512\""),
    ];
    for (path, fragment) in expected {
        assert_problem(&problems, path, fragment);
    }
    assert_eq!(problems.len(), expected.len(), "{}", problems.join("\n"));
}

#[test]
fn check_command_exits_2_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(r#"max_body = "1XB""#, &route("a", "/a/mcp", "ftp://x", "")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(["check", "--config"])
        .arg(&bad)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(r#"server.max_body: "1XB" is not a size"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"routes[0].upstream: "ftp://x" is not an http(s) URL"#),
        "{stderr}"
    );
    let problem_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("server.max_body") || l.contains("routes[0].upstream"))
        .collect();
    assert_eq!(problem_lines.len(), 2, "one line per problem: {stderr}");
    assert!(
        problem_lines.iter().all(|l| l.contains("bad.toml")),
        "each line names the file: {stderr}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, config("", &ok_route())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(["check", "--config"])
        .arg(&good)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/a/mcp"), "{stdout}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused_with_the_flag_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("gateway.toml");
    std::fs::write(&good, config("", &ok_route())).unwrap();
    let check = |flag: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcpgate"));
        cmd.args(["check", "--config"])
            .arg(&good)
            .env_remove("RUST_LOG");
        if let Some(f) = flag {
            cmd.args(["--log-filter", f]);
        }
        if let Some(e) = env {
            cmd.env("RUST_LOG", e);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (flag, env) in [
        (Some("info,mcpgate=loud"), None),
        (None, Some("mcpgate=[bad")),
    ] {
        let (code, stderr) = check(flag, env);
        assert_eq!(code, Some(2), "{flag:?} {env:?}: {stderr}");
        assert!(stderr.contains("--log-filter"), "names the flag: {stderr}");
        assert!(
            stderr.contains("loud") || stderr.contains("[bad"),
            "quotes the value: {stderr}"
        );
    }
    for ok in [
        "info",
        "warn,mcpgate=debug,hyper=off",
        "mcpgate::audit=info",
    ] {
        let (code, stderr) = check(Some(ok), None);
        assert_eq!(code, Some(0), "{ok}: {stderr}");
    }
}

#[test]
fn version_flag_prints_the_package_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("mcpgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn harness_builder_config_is_valid() {
    // The integration harness's own config must pass validation, or every test would break.
    let upstream = "http://127.0.0.1:1/mcp";
    let builder = GatewayBuilder::new()
        .route(TestRoute::anonymous("a", "/a/mcp", upstream))
        .route(TestRoute::new("b", "/b/mcp", upstream).api_key("k", "bot", &["mcp:tools"]));
    mcpgate::config::from_str(&builder.toml(), &builder.dir())
        .unwrap_or_else(|e| panic!("{e}\n{}", builder.toml()));
}
