//! TLS is always verified (issue 10's security checks): a loopback HTTPS server whose certificate
//! an unknown CA signed is refused, and accepted only once that CA is configured
//! (`opencast.ca_file`); a CA configured for one server does not make another CA's certificate
//! acceptable. The server is the real `openssl s_server` (Debian's `openssl`, which
//! `ca-certificates` pulls in); the certificates are made by the real `openssl` CLI for this run.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lectern_opencast::client::agent;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt: openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA named `name` (`{name}.pem`, `{name}.key`) and, when `server`, a certificate for
/// 127.0.0.1 it signed (`{name}-server.pem`, `{name}-server.key`).
fn make_ca(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-keyout", &key, "-out", &pem, "-subj", &format!("/CN=Lectern test {name}"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let (spem, skey, csr) = (format!("{name}-server.pem"), format!("{name}-server.key"), format!("{name}-server.csr"));
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &skey, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(dir, &["x509", "-req", "-in", &csr, "-CA", &pem, "-CAkey", &key, "-CAcreateserial", "-days", "2", "-out", &spem, "-extfile", "ext.cnf"]);
}

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server -www` on a free loopback port with `{name}-server.pem`: it answers any GET
/// over TLS with 200 and a status page.
fn serve(dir: &Path, name: &str) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", &format!("{name}-server.pem"), "-key", &format!("{name}-server.key")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child, port)
}

fn get(port: u16, ca: Option<&[u8]>) -> Result<u16, String> {
    let s = Duration::from_secs(5);
    agent(s, s, s, ca).get(&format!("https://127.0.0.1:{port}/")).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

#[test]
fn an_unknown_ca_is_refused_unless_it_is_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "campus");
    make_ca(dir.path(), "other");
    let server = serve(dir.path(), "campus");
    let campus = std::fs::read(dir.path().join("campus.pem")).unwrap();
    let other = std::fs::read(dir.path().join("other.pem")).unwrap();

    // The public roots (the default) do not know the campus CA.
    let e = get(server.1, None).expect_err("a certificate from an unknown CA must be refused");
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    // Another CA configured: still refused.
    let e = get(server.1, Some(&other)).expect_err("only the configured CA is trusted");
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    // A file without a usable certificate trusts nothing (never "verification off").
    assert!(get(server.1, Some(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")).is_err());
    // The campus CA configured: the handshake succeeds and the request is answered.
    assert_eq!(get(server.1, Some(&campus)), Ok(200));

    // The same through the config: `opencast.ca_file` next to the config file reaches the client.
    let config = dir.path().join("lectern.toml");
    std::fs::write(&config, format!("[opencast]\nurl = \"https://127.0.0.1:{}\"\nca_file = \"campus.pem\"\n", server.1)).unwrap();
    let oc = lectern_config::Config::load(&config).unwrap().opencast.unwrap();
    assert_eq!(get(server.1, oc.ca_pem.as_deref()), Ok(200));
}
