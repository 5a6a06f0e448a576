//! A real OCI registry for the tests: Debian's `docker-registry` (Distribution
//! 2.8) on a free loopback port, its storage in a temporary folder, with or
//! without htpasswd auth; and an artifact pushed by `skopeo` from an OCI layout
//! written here by hand in the wasm OCI format, so that loading does not only
//! meet what `optech push` writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

/// The user of [`Registry::start_with_auth`].
pub const USER: &str = "optech";
pub const PASSWORD: &str = "s3cret-registry-pass";
/// `USER:PASSWORD` as htpasswd keeps it (bcrypt, made once with Python's
/// `crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))`).
const HTPASSWD: &str = "optech:$2b$05$FKPWBxVrFzo5p7TiJRHnDuG3KsG0L/e84sSLex/bJoHHRWrBKL/P6\n";

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

pub struct Registry {
    /// `127.0.0.1:PORT`, as a reference writes it.
    pub addr: String,
    /// The storage's root directory.
    pub root: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// An anonymous registry.
    pub async fn start(dir: &Path) -> Registry {
        Self::start_in(dir, None).await
    }

    /// A registry that admits only [`USER`] with [`PASSWORD`] (HTTP Basic).
    pub async fn start_with_auth(dir: &Path) -> Registry {
        Self::start_in(dir, Some(HTPASSWD)).await
    }

    async fn start_in(dir: &Path, htpasswd: Option<&str>) -> Registry {
        std::fs::create_dir_all(dir).expect("the registry's folder");
        let root = dir.join("storage");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        // No blob descriptor cache: a blob replaced on disk is served as it is.
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            root.display()
        );
        if let Some(htpasswd) = htpasswd {
            let file = dir.join("htpasswd");
            std::fs::write(&file, htpasswd).expect("the htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: optech-tests\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("the registry's config");
        let mut registry = Registry {
            addr,
            root,
            config: config_path,
            log: dir.join("registry.log"),
            child: None,
        };
        registry.restart().await;
        registry
    }

    /// Starts it again, same port and storage (after [`Registry::stop`]).
    pub async fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the registry's log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        self.child = Some(child);
        let url = format!("http://{}/v2/", self.addr);
        let start = Instant::now();
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && matches!(response.status().as_u16(), 200 | 401)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the registry did not answer within 30 s; its log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (idempotent); its storage stays.
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

    /// Where the registry keeps the blob `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
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

    /// Points `repo:to` at the manifest of `repo:from` through the registry's
    /// API (a manifest PUT, no blob uploaded), as a promotion script would.
    pub async fn retag(&self, repo: &str, from: &str, to: &str) {
        const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
        let client = reqwest::Client::new();
        let base = format!("http://{}/v2/{repo}/manifests", self.addr);
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes `wasm` as a wasm OCI artifact in an OCI layout under `work` (by hand:
/// not with our code) and copies it with `skopeo` to `ADDR/<repo:tag>`.
/// Returns the manifest digest, which skopeo keeps.
pub fn push_wasm_with_skopeo(
    registry_addr: &str,
    repo_and_tag: &str,
    wasm: &[u8],
    work: &Path,
    creds: Option<(&str, &str)>,
) -> Result<String, String> {
    let (_, tag) = repo_and_tag
        .rsplit_once(':')
        .ok_or("repo_and_tag needs a tag")?;
    let blobs = work.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| e.to_string())?;
    let put = |bytes: &[u8]| -> Result<String, String> {
        let d = digest(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).map_err(|e| e.to_string())?;
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
    std::fs::write(work.join("index.json"), index.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(work.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| e.to_string())?;
    let mut command = Command::new("skopeo");
    command.args(["copy", "--dest-tls-verify=false", "--preserve-digests"]);
    if let Some((user, password)) = creds {
        command
            .arg("--dest-creds")
            .arg(format!("{user}:{password}"));
    }
    let output = command
        .arg(format!("oci:{}:{tag}", work.display()))
        .arg(format!("docker://{registry_addr}/{repo_and_tag}"))
        .output()
        .map_err(|e| format!("running skopeo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(manifest_digest)
}
