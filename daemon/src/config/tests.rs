use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/tokend/config.toml"), text)
}

const MINUT: &str = r#"
[profiles.minut]
grant = "client_credentials"
token_url = "https://api.minut.com/v8/oauth/token"
client_id = "my-client"
client_secret = "s3cret"
token_params = { response_type = "token" }
"#;

/// The security fingerprint of [`MINUT`] as tokend computed it before endpoint discovery.
const MINUT_FINGERPRINT: &str = "e43ef777ad2714cab5754aa8b26a69c14a86b783aa578c39cb2620904bdf3651";

#[test]
fn a_minimal_client_credentials_profile_gets_sensible_defaults() {
    let config = parse(MINUT).unwrap();
    let p = &config.profiles["minut"];
    assert_eq!(p.grant, Grant::ClientCredentials);
    assert_eq!(p.client_auth, ClientAuth::Basic);
    assert_eq!(p.client_secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(p.refresh_margin, DEFAULT_REFRESH_MARGIN);
    assert_eq!(p.default_expires_in, DEFAULT_EXPIRES_IN);
    assert_eq!(p.token_params["response_type"], "token");
    assert_eq!(config.daemon, DaemonSettings::default());
}

#[test]
fn debug_output_of_a_profile_hides_the_secret() {
    let config = parse(MINUT).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let text = MINUT.replace("client_id = \"my-client\"", "client_id = \"my-client\"\nclinet_secret = \"x\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.message.contains("clinet_secret"), "{err}");
    assert_eq!(err.key.as_deref(), Some("clinet_secret"));
    assert!(err.to_string().starts_with("/etc/tokend/config.toml:6"), "{err}");
}

#[test]
fn unknown_top_level_tables_are_rejected() {
    let err = parse("[profile.x]\ngrant = \"client_credentials\"\n").unwrap_err();
    assert!(err.message.contains("profile"), "{err}");
    assert_eq!(err.line, Some(1));
}

#[test]
fn a_syntax_error_names_its_line() {
    let err = parse("[daemon]\nlog_level = \"info\"\nsocket = \n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
}

#[test]
fn an_unknown_grant_lists_the_valid_ones() {
    let err = parse(&MINUT.replace("client_credentials", "password")).unwrap_err();
    assert!(err.message.contains("\"authorization_code\""), "{err}");
    assert_eq!(err.line, Some(3));
}

#[test]
fn plain_http_is_refused_except_for_loopback() {
    let err = parse(&MINUT.replace("https://api.minut.com", "http://api.minut.com")).unwrap_err();
    assert!(err.message.contains("https"), "{err}");
    assert_eq!(err.line, Some(4));
    for host in ["127.0.0.1:8080", "[::1]:8080", "localhost:9", "127.3.4.5"] {
        let text = MINUT.replace("https://api.minut.com", &format!("http://{host}"));
        assert!(parse(&text).is_ok(), "{host}");
    }
}

#[test]
fn a_bad_value_names_its_key_but_never_shows_the_value() {
    let err = parse(&MINUT.replace("client_secret = \"s3cret\"", "client_secret = [\"s3cret\"]")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("client_secret"), "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let err = parse(&(MINUT.to_owned() + "[profiles.x]\ngrant = \"client_credentials\"\n")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.x"), "{err}");
    assert!(err.message.contains("client_id"), "{err}");
}

#[test]
fn token_url_is_required_unless_an_issuer_publishes_it() {
    let without = MINUT.replace("token_url = \"https://api.minut.com/v8/oauth/token\"\n", "");
    let err = parse(&without).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.minut.token_url"), "{err}");
    assert!(err.message.contains("unless `issuer` is set"), "{err}");
    let config = parse(&without.replace("grant =", "issuer = \"https://as.example/tenant\"\ngrant =")).unwrap();
    let profile = &config.profiles["minut"];
    assert_eq!(profile.token_url(), None, "loading does no discovery");
    assert!(profile.needs_discovery() && profile.wants_discovery());
    assert_eq!(profile.issuer.as_deref(), Some("https://as.example/tenant"), "kept exactly as written");
}

#[test]
fn a_login_profile_configured_by_issuer_needs_no_endpoint_urls() {
    let text = "[profiles.mm]\ngrant = \"authorization_code\"\nissuer = \"https://as.example\"\nredirect_uri = \"http://127.0.0.1:8976/cb\"\nclient_id = \"a\"\n";
    let profile = parse(text).unwrap().profiles["mm"].clone();
    assert!(profile.needs_discovery());
    let err = parse(&text.replace("issuer = \"https://as.example\"", "token_url = \"https://as.example/token\""))
        .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.mm.authorize_url"), "{err}");
}

#[test]
fn explicit_endpoints_win_over_discovered_ones() {
    let text = MINUT
        .replace("grant =", "issuer = \"https://as.example\"\nrevoke_url = \"https://mine.example/revoke\"\ngrant =");
    let spec = parse(&text).unwrap().profiles["minut"].clone();
    assert!(!spec.needs_discovery() && spec.wants_discovery(), "the optional endpoints are still worth discovering");
    let url = |s: &str| Some(url::Url::parse(s).unwrap());
    let profile = spec.with_discovered(Some(Endpoints {
        token: url("https://as.example/token"),
        revocation: url("https://as.example/revoke"),
        info: url("https://as.example/me"),
        ..Endpoints::default()
    }));
    assert_eq!(profile.token_url().unwrap().as_str(), "https://api.minut.com/v8/oauth/token");
    assert_eq!(profile.revoke_url().unwrap().as_str(), "https://mine.example/revoke");
    assert_eq!(profile.info_url().unwrap().as_str(), "https://as.example/me");
    assert!(profile.same_settings(&spec), "discovered endpoints are not settings");
    assert_eq!(profile.security_fingerprint(), spec.security_fingerprint());
}

#[test]
fn the_fingerprint_of_a_profile_without_an_issuer_is_what_it_always_was() {
    // Tokens saved before discovery existed must still be reused.
    let profile = parse(MINUT).unwrap().profiles["minut"].clone();
    assert_eq!(profile.security_fingerprint(), MINUT_FINGERPRINT);
}

#[test]
fn an_issuer_must_be_an_https_url_without_query_or_fragment() {
    for (issuer, why) in [
        ("http://as.example", "not an https URL"),
        ("https://as.example/?tenant=a", "query or #fragment"),
        ("https://as.example/#x", "query or #fragment"),
        ("as.example", "invalid issuer"),
    ] {
        let err = parse(&MINUT.replace("grant =", &format!("issuer = \"{issuer}\"\ngrant ="))).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("issuer"), "{issuer}: {err}");
        assert!(err.message.contains(why), "{issuer}: {err}");
    }
    assert!(parse(&MINUT.replace("grant =", "issuer = \"http://127.0.0.1:8080/x\"\ngrant =")).is_ok());
}

#[test]
fn at_most_one_secret_source_is_allowed() {
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret = \"s3cret\"\nclient_secret_env = \"X\"");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.minut.client_secret_env"));
    assert_eq!(err.line, Some(7), "{err}");
}

#[test]
fn client_credentials_needs_a_secret() {
    let err = parse(&MINUT.replace("client_secret = \"s3cret\"\n", "")).unwrap_err();
    assert!(err.message.contains("needs a client secret"), "{err}");
    assert_eq!(err.line, Some(2), "points at the profile's table: {err}");
}

#[test]
fn a_missing_environment_variable_is_a_config_error() {
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret_env = \"TOKEND_TEST_SURELY_UNSET\"");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("TOKEND_TEST_SURELY_UNSET is not set"), "{err}");
    assert_eq!(err.key.as_deref(), Some("profiles.minut.client_secret_env"));
}

#[test]
fn a_secret_command_runs_and_its_trailing_newline_is_dropped() {
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret_command = \"printf 'from-cmd\\\\n'\"");
    let config = parse(&text).unwrap();
    assert_eq!(config.profiles["minut"].client_secret.as_ref().unwrap().expose(), "from-cmd");
}

#[test]
fn a_failing_secret_command_is_a_config_error_with_its_stderr() {
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret_command = \"echo vault sealed >&2; exit 3\"");
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("vault sealed"), "{err}");
}

#[test]
fn a_secret_command_timeout_is_read_and_belongs_with_a_command() {
    let text = MINUT.replace(
        "client_secret = \"s3cret\"",
        "client_secret_command = \"echo s\"\nclient_secret_command_timeout = \"2m\"",
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.profiles["minut"].client_secret_source,
        SecretSource::Command { command: "echo s".into(), timeout: Duration::from_secs(120) }
    );
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret_command = \"echo s\"");
    let config = parse(&text).unwrap();
    assert!(matches!(
        config.profiles["minut"].client_secret_source,
        SecretSource::Command { timeout, .. } if timeout == Duration::from_secs(30)
    ));
    let text = MINUT.replace("token_params", "client_secret_command_timeout = \"2m\"\ntoken_params");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.minut.client_secret_command_timeout"));
    assert!(err.message.contains("only used with client_secret_command"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_config_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, MINUT.replace("client_secret = \"s3cret\"", "client_secret_env = \"HOME\"")).unwrap();
    for mode in [0o664, 0o646] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.message.contains("can be changed by other users") && err.message.contains("chmod go-w"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Config::load(&path).unwrap();
}

#[cfg(unix)]
#[test]
fn a_secret_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = MINUT.replace("client_secret = \"s3cret\"", &format!("client_secret_file = {:?}", file));
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = parse(&text).unwrap();
    assert_eq!(config.profiles["minut"].client_secret.as_ref().unwrap().expose(), "from-file");
}

#[test]
fn a_relative_secret_file_is_found_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("minut.secret");
    std::fs::write(&file, "rel").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = MINUT.replace("client_secret = \"s3cret\"", "client_secret_file = \"minut.secret\"");
    let config = Config::parse(&dir.path().join("config.toml"), &text).unwrap();
    assert_eq!(config.profiles["minut"].client_secret.as_ref().unwrap().expose(), "rel");
}

#[cfg(unix)]
#[test]
fn a_config_with_an_inline_secret_must_not_be_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, MINUT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(err.message.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Config::load(&path).unwrap();
}

const MOVEMINT: &str = r#"
[profiles.movemint]
grant = "authorization_code"
token_url = "https://movemint.example/oauth/token"
authorize_url = "https://movemint.example/oauth/authorize"
redirect_uri = "http://127.0.0.1:8976/callback"
revoke_url = "https://movemint.example/oauth/revoke"
info_url = "https://movemint.example/oauth/token/info"
client_id = "abc"
client_secret = "def"
client_auth = "post"
scopes = ["public", "write"]
refresh_margin = "10m"
"#;

#[test]
fn an_authorization_code_profile_parses() {
    let config = parse(MOVEMINT).unwrap();
    let p = &config.profiles["movemint"];
    assert_eq!(p.grant, Grant::AuthorizationCode);
    assert_eq!(p.client_auth, ClientAuth::Post);
    assert_eq!(p.scope_param().as_deref(), Some("public write"));
    assert_eq!(p.refresh_margin, Duration::from_secs(600));
    assert_eq!(p.redirect_uri.as_ref().unwrap().port(), Some(8976));
}

#[test]
fn the_redirect_uri_must_be_loopback_with_a_port() {
    for (bad, why) in [
        ("https://movemint.example/cb", "loopback"),
        ("http://192.168.1.2:8976/cb", "loopback"),
        ("http://127.0.0.1/cb", "no port"),
    ] {
        let err = parse(&MOVEMINT.replace("http://127.0.0.1:8976/callback", bad)).unwrap_err();
        assert!(err.message.contains(why), "{bad}: {err}");
        assert_eq!(err.line, Some(6), "{err}");
    }
}

#[test]
fn authorization_code_needs_its_urls() {
    let err =
        parse(&MOVEMINT.replace("authorize_url = \"https://movemint.example/oauth/authorize\"\n", "")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.movemint.authorize_url"), "{err}");
}

#[test]
fn a_public_authorization_code_client_needs_no_secret() {
    let config = parse(&MOVEMINT.replace("client_secret = \"def\"\n", "")).unwrap();
    assert!(config.profiles["movemint"].client_secret.is_none());
}

#[test]
fn reserved_parameters_cannot_be_overridden() {
    let err = parse(&MINUT.replace("response_type = \"token\"", "grant_type = \"password\"")).unwrap_err();
    assert!(err.message.contains("grant_type"), "{err}");
}

#[test]
fn durations_are_checked() {
    let err = parse(&MOVEMINT.replace("\"10m\"", "\"ten minutes\"")).unwrap_err();
    assert!(err.message.contains("invalid duration"), "{err}");
    assert_eq!(err.line, Some(13));
    let config = parse(&MOVEMINT.replace("\"10m\"", "90")).unwrap();
    assert_eq!(config.profiles["movemint"].refresh_margin, Duration::from_secs(90));
}

#[test]
fn scopes_with_spaces_are_refused() {
    let err = parse(&MOVEMINT.replace("[\"public\", \"write\"]", "[\"public write\"]")).unwrap_err();
    assert!(err.message.contains("own string"), "{err}");
}

#[test]
fn profile_names_are_kept_plain() {
    let err = parse(&MINUT.replace("[profiles.minut]", "[profiles.\"../etc\"]")).unwrap_err();
    assert!(err.message.contains("invalid profile name"), "{err}");
}

#[test]
fn the_daemon_table_is_read() {
    let config = parse(
        "[daemon]\nsocket = \"/run/t.sock\"\nlog_level = \"debug\"\nmax_connections = 10\nhttp_timeout = \"5s\"\n",
    )
    .unwrap();
    assert_eq!(config.daemon.socket.as_deref(), Some(Path::new("/run/t.sock")));
    assert_eq!(config.daemon.log_level.as_deref(), Some("debug"));
    assert_eq!(config.daemon.max_connections, 10);
    assert_eq!(config.daemon.http_timeout, Duration::from_secs(5));
    assert!(config.profiles.is_empty());
}

#[test]
fn log_level_takes_a_level_or_per_module_levels() {
    for level in ["trace", "warn", "tokend=debug", "warn,tokend::http=trace", "hyper=off,info"] {
        let config = parse(&format!("[daemon]\nlog_level = \"{level}\"\n")).unwrap();
        assert_eq!(config.daemon.log_level.as_deref(), Some(level));
    }
    for level in ["tokend=loud", "info,hyper=sometimes"] {
        let err = parse(&format!("[daemon]\nlog_level = \"{level}\"\n")).unwrap_err();
        assert!(err.message.contains(&format!("invalid log level {level:?}")), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }
}

#[test]
fn the_security_fingerprint_follows_whose_tokens_these_are() {
    let base = parse(MOVEMINT).unwrap().profiles["movemint"].security_fingerprint();
    let margin = parse(&MOVEMINT.replace("\"10m\"", "\"20m\"")).unwrap().profiles["movemint"].security_fingerprint();
    assert_eq!(base, margin, "the refresh margin does not decide whose tokens these are");
    for (from, to) in [
        ("client_id = \"abc\"", "client_id = \"abd\""),
        ("[\"public\", \"write\"]", "[\"public\"]"),
        ("client_secret = \"def\"", "client_secret = \"deg\""),
        ("https://movemint.example/oauth/token\"", "https://other.example/oauth/token\""),
        ("\"https://movemint.example/oauth/authorize\"", "\"https://other.example/oauth/authorize\""),
        ("8976", "8977"),
    ] {
        assert!(MOVEMINT.contains(from), "{from}");
        let changed = parse(&MOVEMINT.replace(from, to)).unwrap().profiles["movemint"].security_fingerprint();
        assert_ne!(base, changed, "{from} -> {to}");
    }
    // The grant alone: a config cannot change only the grant (client_credentials refuses
    // authorize_url and redirect_uri), so change it on the parsed profile.
    let mut other_grant = Profile::clone(&parse(MOVEMINT).unwrap().profiles["movemint"]);
    other_grant.grant = Grant::ClientCredentials;
    assert_ne!(base, other_grant.security_fingerprint(), "grant");
    // And as a config would: the same client, server and scopes under the other grant.
    let as_client_credentials = MOVEMINT
        .replace("grant = \"authorization_code\"", "grant = \"client_credentials\"")
        .replace("authorize_url = \"https://movemint.example/oauth/authorize\"\n", "")
        .replace("redirect_uri = \"http://127.0.0.1:8976/callback\"\n", "");
    let changed = parse(&as_client_credentials).unwrap().profiles["movemint"].security_fingerprint();
    assert_ne!(base, changed, "authorization_code -> client_credentials");
}

#[test]
fn durations_are_bounded() {
    let err = parse(&format!("[daemon]\nhttp_timeout = \"0s\"\n{MINUT}")).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("longer than zero"), "{err}");
    for huge in ["\"500000000000years\"", "9223372036854775807"] {
        let err = parse(&format!("[daemon]\nhttp_timeout = {huge}\n{MINUT}")).unwrap_err();
        assert!(err.message.contains("at most 100 years"), "{err}");
        let err = parse(&MINUT.replace("grant =", &format!("retry_max = {huge}\ngrant ="))).unwrap_err();
        assert!(err.message.contains("at most 100 years"), "{err}");
    }
    assert!(parse(&format!("[daemon]\nhttp_timeout = \"2m\"\n{MINUT}")).is_ok());
}

#[test]
fn a_daemon_key_error_names_that_key_s_line() {
    let text = format!(
        "# [daemon] settings follow\n\n[daemon]\nlog_level = \"info\"\nencryption_key_file = \"/k\"\nencryption_key_credential = \"k\"\n{MINUT}"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert_eq!(err.key.as_deref(), Some("daemon.encryption_key_credential"));
}

#[test]
fn the_http_socket_is_beside_the_socket_elsewhere_or_off() {
    assert_eq!(parse("").unwrap().daemon.http_socket, HttpSocket::BesideSocket);
    let at = parse("[daemon]\nhttp_socket = \"/run/h.sock\"\n").unwrap();
    assert_eq!(at.daemon.http_socket, HttpSocket::At("/run/h.sock".into()));
    assert_eq!(parse("[daemon]\nhttp_socket = false\n").unwrap().daemon.http_socket, HttpSocket::Off);
    assert_eq!(parse("[daemon]\nhttp_socket = true\n").unwrap().daemon.http_socket, HttpSocket::BesideSocket);
    for bad in ["\"\"", "3"] {
        let err = parse(&format!("[daemon]\n\nhttp_socket = {bad}\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_deref()), (Some(3), Some("http_socket")), "{err}");
    }
}

#[test]
fn api_base_must_be_https_or_loopback_without_a_query() {
    let with = |value: &str| parse(&MINUT.replace("client_id =", &format!("api_base = \"{value}\"\nclient_id =")));
    let config = with("https://api.minut.com/v8").unwrap();
    assert_eq!(config.profiles["minut"].api_base.as_ref().unwrap().as_str(), "https://api.minut.com/v8");
    assert!(with("http://127.0.0.1:8080/api").is_ok());
    for (bad, says) in [
        ("http://api.minut.com/v8", "plain http"),
        ("https://api.minut.com/v8?key=1", "?query"),
        ("https://user:pw@api.minut.com/", "credentials"),
        ("https://api.minut.com/#x", "fragment"),
        ("ftp://api.minut.com/", "not an https URL"),
    ] {
        let err = with(bad).unwrap_err();
        assert!(err.message.contains(says), "{bad}: {err}");
        assert_eq!(err.key.as_deref(), Some("api_base"), "{err}");
    }
}

#[test]
fn the_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // The examples' secrets live in files and variables this machine does not have.
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|line| if line.starts_with("client_secret") { "client_secret = \"x\"" } else { line })
                .map(|line| format!("{line}\n"))
                .collect();
            Config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 3, "found the examples in {}", dir.display());
}

#[test]
fn the_quiet_window_is_on_for_refresh_tokens_and_off_for_client_credentials_by_default() {
    assert_eq!(parse(MOVEMINT).unwrap().profiles["movemint"].quiet_window, DEFAULT_QUIET_WINDOW);
    assert_eq!(parse(MINUT).unwrap().profiles["minut"].quiet_window, Duration::ZERO);
    let off = parse(&MOVEMINT.replace("refresh_margin = \"10m\"", "quiet_window = \"0s\"")).unwrap();
    assert_eq!(off.profiles["movemint"].quiet_window, Duration::ZERO);
    let on = parse(&MINUT.replace("grant =", "quiet_window = \"1500ms\"\ngrant =")).unwrap();
    assert_eq!(on.profiles["minut"].quiet_window, Duration::from_millis(1500));
}

#[test]
fn a_bad_quiet_window_names_its_file_line_and_key() {
    let err = parse(&MOVEMINT.replace("refresh_margin = \"10m\"", "quiet_window = \"soon\"")).unwrap_err();
    assert_eq!(err.line, Some(13), "{err}");
    assert_eq!(err.key.as_deref(), Some("quiet_window"), "{err}");
    assert!(err.to_string().starts_with("/etc/tokend/config.toml:13"), "{err}");
    assert!(err.message.contains("invalid duration"), "{err}");
    let err = parse(&MOVEMINT.replace("refresh_margin = \"10m\"", "quiet_windows = \"2s\"")).unwrap_err();
    assert_eq!(err.line, Some(13), "{err}");
    assert!(err.message.contains("quiet_windows"), "{err}");
}

#[test]
fn login_lifetime_is_a_duration_for_profiles_with_a_login() {
    assert_eq!(parse(MOVEMINT).unwrap().profiles["movemint"].login_lifetime, None);
    let set = parse(&MOVEMINT.replace("refresh_margin = \"10m\"", "login_lifetime = \"90days\"")).unwrap();
    assert_eq!(set.profiles["movemint"].login_lifetime, Some(Duration::from_secs(90 * 24 * 3600)));
    let err = parse(&MOVEMINT.replace("refresh_margin = \"10m\"", "login_lifetime = \"0s\"")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("login_lifetime"), "{err}");
    assert!(err.message.contains("longer than zero"), "{err}");
    let err = parse(&MINUT.replace("token_params", "login_lifetime = \"7days\"\ntoken_params")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.minut.login_lifetime"), "{err}");
    assert!(err.message.contains("no login"), "{err}");
}

const DEVICE: &str = r#"
[profiles.tv]
grant = "device_code"
token_url = "https://as.example/token"
device_authorization_url = "https://as.example/device"
client_id = "tv"
scopes = ["offline_access"]
"#;

#[test]
fn a_device_code_profile_is_a_public_login_profile_by_default() {
    let p = parse(DEVICE).unwrap().profiles["tv"].clone();
    assert_eq!(p.grant, Grant::DeviceCode);
    assert!(p.grant.has_login());
    assert_eq!(p.client_secret, None);
    assert_eq!(p.device_authorization_url().unwrap().as_str(), "https://as.example/device");
    assert_eq!(p.quiet_window, DEFAULT_QUIET_WINDOW, "refreshes like an authorization_code profile");
    assert_eq!(p.login_timeout, DEFAULT_LOGIN_TIMEOUT);
    assert!(!p.needs_discovery());
}

#[test]
fn a_device_code_profile_needs_its_device_authorization_url_or_an_issuer() {
    let without = DEVICE.replace("device_authorization_url = \"https://as.example/device\"\n", "");
    let err = parse(&without).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.tv.device_authorization_url"), "{err}");
    assert!(err.message.contains("required for grant = \"device_code\""), "{err}");
    let by_issuer = parse(&without.replace("grant =", "issuer = \"https://as.example\"\ngrant =")).unwrap();
    let p = &by_issuer.profiles["tv"];
    assert!(p.needs_discovery(), "the device endpoint comes from the metadata");
    assert_eq!(p.missing_endpoint(), Some(("device_authorization_endpoint", "device_authorization_url")));
    let plain = DEVICE.replace("https://as.example/device", "http://as.example/device");
    assert!(parse(&plain).unwrap_err().message.contains("plain http"));
}

#[test]
fn device_and_browser_login_keys_do_not_mix() {
    let err =
        parse(&DEVICE.replace("client_id", "redirect_uri = \"http://127.0.0.1:8976/cb\"\nclient_id")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.tv.redirect_uri"), "{err}");
    let err =
        parse(&DEVICE.replace("client_id", "authorize_url = \"https://as.example/auth\"\nclient_id")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.tv.authorize_url"), "{err}");
    let cc = MINUT.replace("client_id", "device_authorization_url = \"https://as.example/device\"\nclient_id");
    let err = parse(&cc).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("profiles.minut.device_authorization_url"), "{err}");
    assert!(err.message.contains("only used with grant = \"device_code\""), "{err}");
    let err = parse(&DEVICE.replace("scopes", "token_params = { device_code = \"x\" }\nscopes")).unwrap_err();
    assert!(err.message.contains("`device_code` is set by tokend itself"), "{err}");
    let err = parse(&MINUT.replace("\"client_credentials\"", "\"device\"")).unwrap_err();
    assert!(err.message.contains("\"device_code\""), "{err}");
}
