//! The CNCF wasm OCI artifact format: one `application/wasm` layer, a config of
//! type `application/vnd.wasm.config.v0+json`, in an OCI image manifest. It is
//! what `wkg oci push` and `wash push` write, so their artifacts load here and
//! ours load there.

use std::collections::BTreeMap;

use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};
use wasmparser::{Encoding, Parser, Payload};

pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The manifest annotation of the creation time (also the config's `created`).
pub const CREATED: &str = "org.opencontainers.image.created";
/// Written by older tools (wasm-to-oci, early Spin); read, never written.
pub const LEGACY_WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// The config blob of a wasm artifact (the fields `wkg` writes).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentSummary>,
}

/// A component's top-level import and export names, for registries' and
/// people's eyes: nothing here is trusted on load.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ComponentSummary {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

/// Why bytes are not a component a push would send.
#[derive(Debug, thiserror::Error)]
pub enum NotAComponent {
    #[error(
        "this is a core WebAssembly module, not a component (build it for wasm32-wasip2, or with `cargo component build`)"
    )]
    CoreModule,
    #[error("not a WebAssembly component: {0}")]
    Malformed(String),
}

/// The component's top-level imports and exports; an error unless `bytes` is a component.
pub fn summarize(bytes: &[u8]) -> Result<ComponentSummary, NotAComponent> {
    let mut summary = ComponentSummary::default();
    // Nested modules and components come between their own section and `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| NotAComponent::Malformed(e.to_string()))? {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(NotAComponent::CoreModule);
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| NotAComponent::Malformed(e.to_string()))?;
                    summary.imports.push(import.name.0.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| NotAComponent::Malformed(e.to_string()))?;
                    summary.exports.push(export.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(summary)
}

/// The layer, config and manifest a push sends for `wasm`, made `created`
/// (unless `extra`, the manifest's other annotations, says when).
pub fn package(
    wasm: Vec<u8>,
    summary: ComponentSummary,
    created: String,
    extra: BTreeMap<String, String>,
) -> (ImageLayer, Config, OciImageManifest) {
    // An explicit creation time (a build's own) makes a push reproducible:
    // the same component and annotations give the same manifest digest.
    let created = extra.get(CREATED).cloned().unwrap_or(created);
    let layer = ImageLayer::new(wasm, WASM_LAYER_MEDIA_TYPE.to_string(), None);
    let config = WasmConfig {
        created: created.clone(),
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![layer.sha256_digest()],
        component: Some(summary),
    };
    // Serializing a struct of strings cannot fail.
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config = Config::new(config_bytes, WASM_CONFIG_MEDIA_TYPE.to_string(), None);
    let mut annotations = extra;
    annotations.insert(CREATED.to_string(), created);
    let mut manifest =
        OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    // Some registries refuse a manifest that does not say what it is.
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
    (layer, config, manifest)
}

/// The one wasm layer of a manifest, or why there is none.
pub fn wasm_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor, String> {
    let wasm: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| {
            l.media_type == WASM_LAYER_MEDIA_TYPE || l.media_type == LEGACY_WASM_LAYER_MEDIA_TYPE
        })
        .collect();
    match wasm.as_slice() {
        [layer] => Ok(layer),
        [] => Err(format!(
            "the artifact has no {WASM_LAYER_MEDIA_TYPE} layer (its layers: {}); is it a container image?",
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        more => Err(format!(
            "the artifact has {} wasm layers; a plugin is one component",
            more.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble of the component encoding.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn only_components_are_packaged() {
        assert!(summarize(EMPTY_COMPONENT).is_ok());
        assert!(matches!(
            summarize(EMPTY_MODULE),
            Err(NotAComponent::CoreModule)
        ));
        assert!(matches!(
            summarize(b"{\"not\": \"wasm\"}"),
            Err(NotAComponent::Malformed(_))
        ));
    }

    #[test]
    fn a_package_is_in_the_wasm_oci_format() {
        let (layer, config, manifest) = package(
            EMPTY_COMPONENT.to_vec(),
            ComponentSummary::default(),
            "2026-12-06T00:00:00Z".into(),
            BTreeMap::new(),
        );
        assert_eq!(manifest.media_type.as_deref(), Some(OCI_IMAGE_MEDIA_TYPE));
        assert_eq!(manifest.config.media_type, WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(manifest.layers[0].media_type, WASM_LAYER_MEDIA_TYPE);
        assert_eq!(manifest.layers[0].digest, layer.sha256_digest());
        let written: WasmConfig = serde_json::from_slice(&config.data).expect("config is JSON");
        assert_eq!(written.architecture, "wasm");
        assert_eq!(written.os, "wasip2");
        assert_eq!(written.layer_digests, vec![layer.sha256_digest()]);
        assert_eq!(
            wasm_layer(&manifest).map(|l| &l.digest),
            Ok(&layer.sha256_digest())
        );
    }

    #[test]
    fn annotations_are_kept_and_an_explicit_creation_time_makes_a_push_reproducible() {
        let extra = BTreeMap::from([
            (
                "org.opencontainers.image.source".to_string(),
                "https://github.com/acme/orders".to_string(),
            ),
            (CREATED.to_string(), "2026-01-01T00:00:00Z".to_string()),
        ]);
        let make = |now: &str| {
            package(
                EMPTY_COMPONENT.to_vec(),
                ComponentSummary::default(),
                now.into(),
                extra.clone(),
            )
        };
        let (_, config, manifest) = make("2026-12-06T00:00:00Z");
        let annotations = manifest.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations["org.opencontainers.image.source"],
            "https://github.com/acme/orders"
        );
        assert_eq!(annotations[CREATED], "2026-01-01T00:00:00Z");
        let written: WasmConfig = serde_json::from_slice(&config.data).expect("config is JSON");
        assert_eq!(written.created, "2026-01-01T00:00:00Z");
        // Pushed again later: the same bytes, so the same digests.
        let (_, again_config, again) = make("2026-12-07T00:00:00Z");
        assert_eq!(again_config.data, config.data);
        assert_eq!(
            serde_json::to_vec(&again).expect("JSON"),
            serde_json::to_vec(&manifest).expect("JSON")
        );
    }

    #[test]
    fn an_image_is_not_a_plugin() {
        let mut manifest = OciImageManifest::default();
        manifest.layers.push(OciDescriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            ..Default::default()
        });
        let error = wasm_layer(&manifest).expect_err("no wasm layer");
        assert!(error.contains("container image"), "{error}");
    }
}
