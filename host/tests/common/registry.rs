//! A real OCI registry for the tests: Debian's `docker-registry` (Distribution
//! 2.8) on a free loopback port, its storage in a temporary folder, with or
//! without htpasswd auth, over plain HTTP or HTTPS with a certificate from a
//! private CA made here; and an artifact pushed by `skopeo` from an OCI layout
//! written here by hand in the wasm OCI format, so that loading does not only
//! meet what `optech push` writes.
//!
//! Nothing here needs root: the registry is an ordinary child process on a
//! port above 1024, and its files are in the test's own folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

/// The user [`Registry::start_with_auth`] admits.
pub const USER: &str = "optech";
/// The password of [`USER`].
pub const PASSWORD: &str = "s3cret-registry-pass";
/// `USER:PASSWORD` as htpasswd keeps it: Distribution accepts only bcrypt, and
/// no bcrypt crate is a dependency, so the line was made once with Python 3.11's
/// `crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))`
/// (cost 5: checking it is cheap) and is kept here.
const HTPASSWD: &str = "optech:$2b$05$FKPWBxVrFzo5p7TiJRHnDuG3KsG0L/e84sSLex/bJoHHRWrBKL/P6\n";

/// How long a started registry may take to answer `/v2/`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Whether `docker-registry` and `skopeo` are installed. Without them the
/// registry tests are skipped with a message, except in CI
/// (`OPTECH_REQUIRE_REGISTRY`), where that is a failure.
pub fn available() -> bool {
    let found = ["docker-registry", "skopeo"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        assert!(
            std::env::var_os("OPTECH_REQUIRE_REGISTRY").is_none(),
            "docker-registry or skopeo is not installed, and CI requires the registry tests"
        );
        eprintln!("skipped: install docker-registry and skopeo to run the registry tests");
    }
    found
}

/// A running `docker-registry serve`, killed when dropped. Its storage is the
/// plain filesystem driver, so a test can read tags and corrupt blobs on disk.
pub struct Registry {
    /// `127.0.0.1:PORT`, as a reference writes it.
    pub addr: String,
    /// The storage's root directory.
    pub root: PathBuf,
    /// Served over HTTPS: the PEM file of the private CA that signed its certificate.
    pub ca: Option<PathBuf>,
    config: PathBuf,
    /// The registry's stderr (its own log) and stdout (its access log), kept
    /// across restarts, for a failing test to read.
    log: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// An anonymous registry, its files under `dir`.
    pub async fn start(dir: &Path) -> Registry {
        Self::start_in(dir, None, false).await
    }

    /// A registry that admits only [`USER`] with [`PASSWORD`] (HTTP Basic).
    pub async fn start_with_auth(dir: &Path) -> Registry {
        Self::start_in(dir, Some(HTPASSWD), false).await
    }

    /// An anonymous registry on HTTPS, its certificate (for `127.0.0.1`)
    /// signed by a CA made for it, whose PEM file is [`Registry::ca`].
    pub async fn start_with_tls(dir: &Path) -> Registry {
        Self::start_in(dir, None, true).await
    }

    async fn start_in(dir: &Path, htpasswd: Option<&str>, tls: bool) -> Registry {
        std::fs::create_dir_all(dir).expect("the registry's folder");
        let ca = tls.then(|| private_ca(dir));
        let tls_config = match tls {
            true => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("registry.crt").display(),
                dir.join("registry.key").display()
            ),
            false => String::new(),
        };
        let root = dir.join("storage");
        let auth = htpasswd.map(|line| {
            let file = dir.join("htpasswd");
            std::fs::write(&file, line).expect("the htpasswd file");
            format!(
                "auth:\n  htpasswd:\n    realm: optech-tests\n    path: {}\n",
                file.display()
            )
        });
        // The port is only free until someone binds it: should another
        // process take it before the registry does, the registry exits, and
        // another port is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            // No `cache:` section, so no blob descriptor cache: with one
            // (Debian's default config has `blobdescriptor: inmemory`), a blob
            // replaced on disk is served with its old length, truncated.
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_config}{}",
                root.display(),
                auth.as_deref().unwrap_or("")
            );
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config).expect("the registry's config");
            let mut registry = Registry {
                addr,
                root: root.clone(),
                ca: ca.clone(),
                config: config_path,
                log: dir.join("registry.log"),
                child: None,
            };
            match registry.launch().await {
                Ok(()) => return registry,
                Err(Launch::Exited(e)) => failures.push(e),
                Err(Launch::NotReady(e)) => panic!("{e}"),
            }
        }
        panic!("docker-registry did not start: {}", failures.join("\n"));
    }

    /// Starts it again, same port and storage (after [`Registry::stop`], or
    /// killing the running one first).
    pub async fn restart(&mut self) {
        match self.launch().await {
            Ok(()) => {}
            Err(Launch::Exited(e) | Launch::NotReady(e)) => panic!("{e}"),
        }
    }

    /// Spawns `docker-registry serve` on the config and waits until `/v2/`
    /// answers (200, or 401 with auth).
    async fn launch(&mut self) -> Result<(), Launch> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the registry's log");
        let access_log = log.try_clone().expect("the registry's log, again");
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(access_log)
            .stderr(log);
        // `REGISTRY_*` variables override the config file: none of the
        // caller's may change what the test asked for.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        self.child = Some(child);
        // A probe that waits long for its answer would hide an exit: the port
        // may be held by a process that accepts connections and says nothing.
        let client = self.client(Duration::from_secs(1));
        let url = format!("{}/v2/", self.url());
        let start = Instant::now();
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(Launch::Exited(format!(
                    "docker-registry on {} exited ({status}); its log:\n{}",
                    self.addr,
                    self.log_tail()
                )));
            }
            if let Ok(response) = client.get(&url).send().await
                && matches!(response.status().as_u16(), 200 | 401)
            {
                return Ok(());
            }
            if start.elapsed() > READY_WITHIN {
                self.stop();
                return Err(Launch::NotReady(format!(
                    "docker-registry on {} did not answer within {READY_WITHIN:?}; its log:\n{}",
                    self.addr,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of the registry's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Kills it and waits for it (idempotent); its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `ADDR/repo_and_tag`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Where the registry keeps the blob `sha256:<hex>`. Replacing this file
    /// changes what the registry serves for the digest (no descriptor cache).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64)
            .expect("a sha256 digest");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The manifest digest `repo:tag` points to, read from the storage.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let link = self
            .root
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        std::fs::read_to_string(link)
            .ok()
            .map(|t| t.trim().to_string())
    }

    /// The manifest `repo:tag` names, as the registry serves it.
    pub async fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        self.client(Duration::from_secs(10))
            .get(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("GET manifest")
            .json()
            .await
            .expect("a JSON manifest")
    }

    /// Points `repo:to` at the manifest of `repo:from` through the registry's
    /// API (a manifest PUT, no blob uploaded), as a promotion script would.
    /// Anonymous registries only.
    pub async fn retag(&self, repo: &str, from: &str, to: &str) {
        const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
        let client = self.client(Duration::from_secs(10));
        let base = format!("{}/v2/{repo}/manifests", self.url());
        let manifest = client
            .get(format!("{base}/{from}"))
            .header("accept", OCI)
            .send()
            .await
            .expect("GET manifest")
            .bytes()
            .await
            .expect("manifest bytes");
        let put = client
            .put(format!("{base}/{to}"))
            .header("content-type", OCI)
            .body(manifest)
            .send()
            .await
            .expect("PUT manifest");
        assert!(put.status().is_success(), "retag: {}", put.status());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why [`Registry::launch`] failed: an exit may be a lost port race (worth
/// another port); not answering is not.
enum Launch {
    Exited(String),
    NotReady(String),
}

impl Registry {
    /// `http://ADDR`, or `https://ADDR` when it serves TLS.
    fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A client for the registry: straight to loopback, whatever proxy the
    /// environment names, trusting its CA, and never stuck on one request
    /// beyond `timeout`.
    fn client(&self, timeout: Duration) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().no_proxy().timeout(timeout);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("the CA's PEM file");
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("the CA"));
        }
        builder.build().expect("an HTTP client")
    }
}

/// Makes a CA and a certificate for `127.0.0.1` it signs, in `dir`:
/// `registry.crt` and `registry.key` for the registry, `ca.pem` for its
/// clients. Returns the path of `ca.pem`.
fn private_ca(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "optech tests private CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("the registry's key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("the registry's params")
        .signed_by(&key, &issuer)
        .expect("the registry's certificate");
    std::fs::write(dir.join("registry.crt"), cert.pem()).expect("registry.crt");
    std::fs::write(dir.join("registry.key"), key.serialize_pem()).expect("registry.key");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).expect("ca.pem");
    ca
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `wasm` as a wasm OCI artifact (the CNCF format: an OCI image
/// manifest, config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer) in an OCI layout under `work`, by hand rather
/// than with our code, and copies it with `skopeo` to
/// `registry_addr/repo_and_tag` (`repo:tag`), with `creds` (user, password)
/// if given. Returns the digest of the manifest written here: skopeo pushes it
/// unchanged (`--preserve-digests` makes it fail rather than convert it).
pub fn push_wasm_with_skopeo(
    registry_addr: &str,
    repo_and_tag: &str,
    wasm: &[u8],
    work: &Path,
    creds: Option<(&str, &str)>,
) -> Result<String, String> {
    let (_, tag) = repo_and_tag
        .rsplit_once(':')
        .ok_or_else(|| format!("{repo_and_tag:?} has no tag"))?;
    let blobs = work.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<String, String> {
        let d = digest(bytes);
        let path = blobs.join(&d["sha256:".len()..]);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(d)
    };
    let layer = put(wasm)?;
    let config = serde_json::to_vec(&json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = put(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": layer,
            "size": wasm.len(),
        }],
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = put(&manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let write = |name: &str, text: &str| -> Result<(), String> {
        let path = work.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("index.json", &index.to_string())?;
    write("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // `--insecure-policy`: no signature policy to read from /etc/containers
    // (there is nothing to verify in a layout made here); `--dest-no-creds`
    // without creds, so that no auth file of the user's is used.
    let mut command = Command::new("skopeo");
    command.args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
    ]);
    match creds {
        Some((user, password)) => {
            command
                .arg("--dest-creds")
                .arg(format!("{user}:{password}"));
        }
        None => {
            command.arg("--dest-no-creds");
        }
    }
    let output = command
        .arg(format!("oci:{}:{tag}", work.display()))
        .arg(format!("docker://{registry_addr}/{repo_and_tag}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running skopeo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "skopeo copy failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(manifest_digest)
}
