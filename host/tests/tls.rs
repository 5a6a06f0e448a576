//! TLS termination on the public listener: requests over HTTPS with the
//! configured certificate; a renewed certificate is served without a restart,
//! and so is each of several Kubernetes Secret volume swaps in a row; a broken
//! one never replaces the one being served.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestHost, examples_dir};

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

fn write_atomically(path: &Path, text: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A client that trusts only `cert`.
fn trusting(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap()
}

async fn echo(client: &reqwest::Client, url: &str) -> Result<u16, reqwest::Error> {
    let body = r#"{"key":"echo","inputs":{"over":"tls"}}"#;
    common::try_post_signed(client, url, body.to_string())
        .await
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn requests_arrive_over_tls_and_a_renewed_certificate_is_served_without_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (first_cert, first_key) = certificate();
    write_atomically(&key_path, &first_key);
    write_atomically(&cert_path, &first_cert);
    let host = TestHost::start(
        &examples_dir(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n[keys]\necho = \"echo\"\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    )
    .await;
    let https = format!("https://localhost:{}/", host.host.addr().port());
    assert_eq!(echo(&trusting(&first_cert), &https).await.unwrap(), 200);
    // Plain HTTP is not served on a TLS listener: no HTTP answer at all.
    let plain = format!("http://127.0.0.1:{}/", host.host.addr().port());
    let answer = echo(&reqwest::Client::new(), &plain).await;
    assert!(answer.is_err(), "plain HTTP got an answer: {answer:?}");

    // Renewal: the new certificate is served to new connections.
    let (second_cert, second_key) = certificate();
    write_atomically(&key_path, &second_key);
    write_atomically(&cert_path, &second_cert);
    common::wait_until(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || async { matches!(echo(&trusting(&second_cert), &https).await, Ok(200)) },
    )
    .await;

    // A broken certificate does not replace the one being served, and the
    // failed reload is counted (what an operator alerts on).
    let admin = host.admin_url();
    let failed_before = failed_reloads(&admin).await;
    write_atomically(&cert_path, "not a certificate");
    common::wait_until(
        "the broken certificate's reload is counted as failed",
        Duration::from_secs(10),
        || async { failed_reloads(&admin).await > failed_before },
    )
    .await;
    assert_eq!(echo(&trusting(&second_cert), &https).await.unwrap(), 200);
}

/// Writes a certificate pair the way kubelet updates a Secret volume: into a
/// new timestamped directory, then `..data` is swapped to it by renaming a
/// fresh symlink over it; `tls.crt` and `tls.key` point through `..data`.
fn kubelet_publish(dir: &Path, generation: u32, cert: &str, key: &str) {
    use std::os::unix::fs::symlink;
    let versioned = format!("..2026_11_30_00_00_0{generation}.000000001");
    std::fs::create_dir(dir.join(&versioned)).unwrap();
    std::fs::write(dir.join(&versioned).join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join(&versioned).join("tls.key"), key).unwrap();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(&versioned, dir.join("..data_tmp")).unwrap();
    let previous = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if !dir.join(name).exists() {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

/// How many times the Secret volume test swaps `..data` (kubelet swaps it on
/// every update of the Secret, for as long as the pod runs).
const SWAPS: u32 = 3;

#[tokio::test]
async fn every_kubernetes_secret_volume_swap_is_served_without_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = certificate();
    kubelet_publish(certs.path(), 1, &first_cert, &first_key);
    let host = TestHost::start(
        &examples_dir(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n[keys]\necho = \"echo\"\n",
            certs.path().join("tls.crt").display().to_string(),
            certs.path().join("tls.key").display().to_string()
        ),
    )
    .await;
    let https = format!("https://localhost:{}/", host.host.addr().port());
    assert_eq!(echo(&trusting(&first_cert), &https).await.unwrap(), 200);
    let admin = host.admin_url();
    let reloaded_before = reloads(&admin, "ok").await;

    // Each swap's certificate is served, and the one it replaced no longer is.
    let mut previous = first_cert;
    for swap in 1..=SWAPS {
        let (cert, key) = certificate();
        kubelet_publish(certs.path(), swap + 1, &cert, &key);
        common::wait_until(
            &format!("swap {swap}: the certificate behind the swapped ..data link is served"),
            Duration::from_secs(10),
            || async { matches!(echo(&trusting(&cert), &https).await, Ok(200)) },
        )
        .await;
        assert_eq!(
            reloads(&admin, "ok").await,
            reloaded_before + f64::from(swap),
            "swap {swap}: one reload each"
        );
        assert!(
            echo(&trusting(&previous), &https).await.is_err(),
            "swap {swap}: the replaced certificate is still served"
        );
        previous = cert;
    }
}

/// `optech_tls_reloads_total{outcome}` on the admin listener.
async fn reloads(admin: &str, outcome: &str) -> f64 {
    common::value(
        &common::scrape(admin).await,
        "optech_tls_reloads_total",
        &[("outcome", outcome)],
    )
}

/// `optech_tls_reloads_total{outcome="failed"}` on the admin listener.
async fn failed_reloads(admin: &str) -> f64 {
    common::value(
        &common::scrape(admin).await,
        "optech_tls_reloads_total",
        &[("outcome", "failed")],
    )
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_up_error_naming_the_file() {
    let missing = tempfile::tempdir().unwrap();
    let cert = missing.path().join("nope.pem");
    let result = TestHost::try_start(
        &examples_dir(),
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n[keys]\necho = \"echo\"\n",
            cert.display().to_string(),
            cert.display().to_string()
        ),
        None,
    )
    .await;
    let message = format!("{:#}", result.err().expect("the host started"));
    assert!(message.contains("nope.pem"), "{message}");
}
