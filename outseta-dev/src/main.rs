//! Command line of the local Outseta stand-in. See `outseta-dev help`.

use std::io::Write;
use std::path::Path;

use outseta_dev::{Issuer, Server, SigningKey, TokenRequest};
use serde_json::Value;

const HELP: &str = "\
outseta-dev: a local Outseta stand-in (JWKS + Outseta-shaped RS256 access tokens)

USAGE
  outseta-dev serve [--addr 127.0.0.1:8787] [--key-file F] [--issuer URL] [--audience A] [--max-age S]
      Serve GET /.well-known/jwks, GET /.well-known/openid-configuration,
      POST /tokens {\"sub\":..,\"account\":..,\"expires_in\":..}, POST /rotate {\"keep_old\":true},
      POST /fault {\"mode\":\"status|slow|redirect|body|oversize|hangup|none\", ...}
      (add \"target\":\"profile\" for the profile endpoint), GET /hits,
      GET /api/v1/profile (Bearer token; 401 unless valid and the person exists),
      POST /people {\"uid\":..,\"properties\":{..},\"deleted\":true|false}.
      Loopback addresses only.
  outseta-dev gateway [--addr 127.0.0.1:8080] [--upstream 127.0.0.1:3000] [--prefix /api]
      [--static DIR]
      A reverse proxy on loopback: paths under the prefix go to the upstream (PostgREST) with
      the prefix removed and the client's headers (Host included); other paths are files of
      DIR (/ is index.html). One origin for a frontend and its API, as nginx would serve them.
  outseta-dev token --key-file F --sub PERSON --account ACCOUNT [--issuer URL] [--audience A]
      [--expires-in S] [--email E] [--name N] [--plan P] [--add-on U]... [--not-primary]
      Print one access token signed with the key in F.
  outseta-dev tokens --key-file F --count N [--people P] [--accounts A] [--issuer URL]
      Print N lines: id, person uid, account uid, token, tab-separated (for load tests and
      benchmarks): token i is for person i % P and account i % A.
  outseta-dev webhook --url URL --key HEX [--body JSON | --account A [--plan P] [--add-on U]...]
      [--bad-signature]
      POST an Outseta-style webhook to a loopback http:// URL: the body (default: an account
      webhook with its current plan and add-ons) signed with HMAC-SHA256 under the 64-hex-digit
      key, in x-hub-signature-256: sha256=<hex>. --bad-signature sends a wrong signature.
      Prints the HTTP status and the response body.
  outseta-dev jwks --key-file F      Print the public JWKS of the key in F.
  outseta-dev keygen --key-file F    Create an RSA-2048 key (PKCS#8 DER) in F.

A key file is created on first use; its kid is derived from the key, so a server and the
token command that share a key file agree.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("outseta-dev: {e}");
        std::process::exit(2);
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn flags<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

fn kid_for(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_create(path: Option<&str>) -> Result<SigningKey, String> {
    let Some(path) = path else {
        return Ok(SigningKey::generate("outseta-dev-1"));
    };
    let p = Path::new(path);
    if p.exists() {
        let der = std::fs::read(p).map_err(|e| format!("reading {path}: {e}"))?;
        SigningKey::from_pkcs8(&kid_for(&der), &der)
    } else {
        let k = SigningKey::generate("tmp");
        let der = k.to_pkcs8();
        std::fs::write(p, &der).map_err(|e| format!("writing {path}: {e}"))?;
        SigningKey::from_pkcs8(&kid_for(&der), &der)
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let key_file = flag(args, "--key-file");
    match cmd {
        "serve" => {
            let addr = flag(args, "--addr").unwrap_or("127.0.0.1:8787");
            let key = load_or_create(key_file)?;
            let base = format!("http://{addr}");
            let mut issuer = Issuer::with_key(flag(args, "--issuer").unwrap_or(&base), key);
            issuer.audience = flag(args, "--audience").map(String::from);
            issuer.max_age = flag(args, "--max-age")
                .map(|s| s.parse().map_err(|_| "--max-age: not a number"))
                .transpose()?;
            let server =
                Server::start(addr, issuer).map_err(|e| format!("cannot serve on {addr}: {e}"))?;
            println!("outseta-dev: serving {}", server.jwks_url());
            loop {
                std::thread::park();
            }
        }
        "gateway" => {
            let addr = flag(args, "--addr").unwrap_or("127.0.0.1:8080");
            let upstream = flag(args, "--upstream")
                .map(|u| u.parse().map_err(|_| "--upstream: not an IP:port"))
                .transpose()?;
            let routes = outseta_dev::gateway::Routes {
                prefix: flag(args, "--prefix").unwrap_or("/api").to_string(),
                upstream,
                static_dir: flag(args, "--static").map(Into::into),
            };
            let gw = outseta_dev::gateway::Gateway::start(addr, routes)
                .map_err(|e| format!("cannot serve on {addr}: {e}"))?;
            println!("outseta-dev: gateway on {}", gw.url());
            loop {
                std::thread::park();
            }
        }
        "token" => {
            let key = load_or_create(Some(key_file.ok_or("--key-file is required")?))?;
            let mut req = TokenRequest::new(
                flag(args, "--sub").ok_or("--sub is required")?,
                flag(args, "--account").ok_or("--account is required")?,
            );
            req.email = flag(args, "--email").map(String::from);
            req.name = flag(args, "--name").map(String::from);
            req.plan_uid = flag(args, "--plan").map(String::from);
            req.add_on_uids = flags(args, "--add-on")
                .into_iter()
                .map(String::from)
                .collect();
            req.is_primary = !args.iter().any(|a| a == "--not-primary");
            if let Some(e) = flag(args, "--expires-in") {
                req.expires_in = e.parse().map_err(|_| "--expires-in: not a number")?;
            }
            let mut issuer = Issuer::with_key(
                flag(args, "--issuer").unwrap_or("http://127.0.0.1:8787"),
                key,
            );
            issuer.audience = flag(args, "--audience").map(String::from);
            println!("{}", issuer.mint(&req));
            Ok(())
        }
        "tokens" => {
            let key = load_or_create(Some(key_file.ok_or("--key-file is required")?))?;
            let num = |name: &str, default: u64| -> Result<u64, String> {
                flag(args, name).map_or(Ok(default), |v| {
                    v.parse().map_err(|_| format!("{name}: not a number"))
                })
            };
            let (count, people, accounts) = (
                num("--count", 1)?,
                num("--people", 1000)?.max(1),
                num("--accounts", 10)?.max(1),
            );
            let issuer = Issuer::with_key(
                flag(args, "--issuer").unwrap_or("http://127.0.0.1:8787"),
                key,
            );
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 0..count {
                let (p, a) = (
                    format!("person{:05}", i % people),
                    format!("acct{:04}", i % accounts),
                );
                let mut req = TokenRequest::new(&p, &a);
                // A jti makes every token distinct even when minted in the same second.
                req.extra
                    .insert("jti".into(), serde_json::json!(format!("t{i}")));
                let t = issuer.mint(&req);
                writeln!(out, "{i}\t{p}\t{a}\t{t}").map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "webhook" => {
            let url = flag(args, "--url").ok_or("--url is required")?;
            let key = flag(args, "--key").ok_or("--key is required")?;
            let body = match flag(args, "--body") {
                Some(b) => b.to_string(),
                None => outseta_dev::account_webhook_body(
                    flag(args, "--account").ok_or("--body or --account is required")?,
                    flag(args, "--plan").unwrap_or("basic"),
                    &flags(args, "--add-on"),
                )
                .to_string(),
            };
            let mut sig = outseta_dev::webhook_signature(key, body.as_bytes())?;
            if args.iter().any(|a| a == "--bad-signature") {
                sig = outseta_dev::webhook_signature(&"0".repeat(64), body.as_bytes())?;
            }
            let (status, resp) = outseta_dev::post_raw(
                url,
                &[
                    ("Content-Type", "application/json"),
                    ("x-hub-signature-256", &sig),
                ],
                body.as_bytes(),
            )
            .map_err(|e| format!("POST {url}: {e}"))?;
            println!("{status} {resp}");
            Ok(())
        }
        "jwks" => {
            let key = load_or_create(Some(key_file.ok_or("--key-file is required")?))?;
            let jwks: Value = serde_json::json!({"keys": [key.jwk()]});
            println!("{jwks}");
            Ok(())
        }
        "keygen" => {
            let path = key_file.ok_or("--key-file is required")?;
            if Path::new(path).exists() {
                return Err(format!("{path} exists; not overwriting"));
            }
            let key = load_or_create(Some(path))?;
            println!("{}", key.kid);
            Ok(())
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}; try `outseta-dev help`")),
    }
}
