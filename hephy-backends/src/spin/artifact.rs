//! Writing a Spin app into an OCI layout: the Spin format (what `spin registry push` writes)
//! and the CNCF Wasm OCI artifact format.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use hephy_core::{BuildContext, BuildError, Digest};
use hephy_oci::layout::OciLayout;
use serde_json::{json, Value};

use super::manifest::SpinApp;
use super::{
    bad, DATA_MEDIA_TYPE, INLINE_MAX_SIZE, LOCKED_APP_DIGEST_LABEL, SPIN_APPLICATION_MEDIA_TYPE,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, WASM_MEDIA_TYPE,
};

struct Layer {
    media_type: &'static str,
    digest: Digest,
    size: u64,
}

/// Writes `path` into the layout as a blob, streaming; returns its digest, size and, when
/// small, its bytes for inlining.
fn blob_from_file(
    layout: &OciLayout,
    path: &Path,
) -> Result<(Digest, u64, Option<Vec<u8>>), BuildError> {
    let err = |e: &dyn std::fmt::Display| {
        BuildError::other(format!("cannot store {}", path.display()), e.to_string())
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(&e))?;
    let len = f.metadata().map_err(|e| err(&e))?.len();
    let mut w = layout.blob_writer().map_err(|e| err(&e))?;
    std::io::copy(&mut f, &mut w).map_err(|e| err(&e))?;
    w.flush().map_err(|e| err(&e))?;
    let (digest, size) = w.finish().map_err(|e| err(&e))?;
    let inline = if len <= INLINE_MAX_SIZE {
        Some(std::fs::read(path).map_err(|e| err(&e))?)
    } else {
        None
    };
    Ok((digest, size, inline))
}

fn content_ref(digest: &Digest, inline: Option<&[u8]>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if let Some(b) = inline {
        m.insert(
            "inline".into(),
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        );
    }
    m.insert("digest".into(), digest.to_string().into());
    m
}

fn check_wasm(path: &Path, rel: &str, id: &str) -> Result<bool, BuildError> {
    use std::io::Read as _;
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| bad(format!("component {id}: cannot read {rel}: {e}")))?;
    if n < 8 || &head[..4] != b"\0asm" {
        return Err(bad(format!(
            "component {id}: {rel} is not a WebAssembly file (it does not start with \\0asm): point source at the .wasm your build makes"
        )));
    }
    // Version 1 is a core module; components have a different version and layer field.
    Ok(head[4..8] != [1, 0, 0, 0])
}

fn rfc3339(ctx: &BuildContext) -> String {
    humantime::format_rfc3339_seconds(ctx.source_date_epoch()).to_string()
}

/// Writes `value` as a compact JSON blob (keys sorted, as serde_json's map sorts them).
fn write_json_blob(layout: &OciLayout, value: &Value) -> Result<(Digest, u64), BuildError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| BuildError::other("cannot encode JSON", e))?;
    layout
        .write_blob(&bytes)
        .map_err(|e| BuildError::other("cannot write to the OCI layout", e.to_string()))
}

fn layer_json(l: &Layer) -> Value {
    json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size})
}

impl SpinApp {
    pub(super) fn write_spin(
        &self,
        ctx: &BuildContext,
        layout: &OciLayout,
    ) -> Result<(Digest, u64), BuildError> {
        let mut layers: Vec<Layer> = vec![];
        let mut seen = BTreeSet::new();
        let mut push = |layers: &mut Vec<Layer>, l: Layer| {
            if seen.insert((l.digest.clone(), l.media_type)) {
                layers.push(l);
            }
        };
        let mut components = vec![];
        for c in &self.components {
            check_wasm(&c.source, &c.source_rel, &c.id)?;
            let (digest, size, inline) = blob_from_file(layout, &c.source)?;
            push(
                &mut layers,
                Layer {
                    media_type: WASM_LAYER_MEDIA_TYPE,
                    digest: digest.clone(),
                    size,
                },
            );
            let mut source = content_ref(&digest, inline.as_deref());
            source.insert("content_type".into(), "application/wasm".into());
            let mut files = vec![];
            for (guest, file) in &c.files {
                let (digest, size, inline) = blob_from_file(layout, file)?;
                let mut f = content_ref(&digest, inline.as_deref());
                f.insert("path".into(), guest.clone().into());
                files.push(Value::Object(f));
                // Spin does not push inlined files: some registries reject tiny blobs.
                if inline.is_none() {
                    push(
                        &mut layers,
                        Layer {
                            media_type: DATA_MEDIA_TYPE,
                            digest,
                            size,
                        },
                    );
                }
            }
            let mut comp = serde_json::Map::new();
            comp.insert("id".into(), c.id.clone().into());
            if !c.metadata.is_empty() {
                comp.insert("metadata".into(), Value::Object(c.metadata.clone()));
            }
            comp.insert("source".into(), Value::Object(source));
            if !c.env.is_empty() {
                comp.insert("env".into(), json!(c.env));
            }
            if !files.is_empty() {
                comp.insert("files".into(), Value::Array(files));
            }
            if !c.config.is_empty() {
                comp.insert("config".into(), json!(c.config));
            }
            components.push(Value::Object(comp));
        }
        let mut locked = serde_json::Map::new();
        locked.insert("spin_lock_version".into(), 0.into());
        if !self.metadata.is_empty() {
            locked.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        if !self.variables.is_empty() {
            locked.insert("variables".into(), Value::Object(self.variables.clone()));
        }
        locked.insert("triggers".into(), Value::Array(self.triggers.clone()));
        locked.insert("components".into(), Value::Array(components));
        let (locked_digest, locked_size) = write_json_blob(layout, &Value::Object(locked))?;
        layers.push(Layer {
            media_type: SPIN_APPLICATION_MEDIA_TYPE,
            digest: locked_digest.clone(),
            size: locked_size,
        });
        let config = json!({
            "architecture": "wasm",
            // What Spin writes (oci-spec's `Os::Other("Wasip1")`), byte for byte.
            "os": "Wasip1",
            "config": {"Labels": {LOCKED_APP_DIGEST_LABEL: locked_digest.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let (config_digest, config_size) = write_json_blob(layout, &config)?;
        let annotations = annotations(
            ctx,
            &[
                ("authors", self.authors.join(", ")),
                ("title", self.name.clone()),
                ("description", self.description.clone()),
                ("version", self.version.clone()),
            ],
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": layers.iter().map(layer_json).collect::<Vec<_>>(),
            "annotations": annotations,
        });
        write_json_blob(layout, &manifest)
    }

    pub(super) fn write_wasm(
        &self,
        ctx: &BuildContext,
        layout: &OciLayout,
    ) -> Result<(Digest, u64), BuildError> {
        let [c] = self.components.as_slice() else {
            return Err(bad(format!(
                "[build.spin] format = \"wasm\" holds one component, and this app has {}: use format = \"spin\" (the default), which holds them all",
                self.components.len()
            )));
        };
        let is_component = check_wasm(&c.source, &c.source_rel, &c.id)?;
        let (digest, size, _) = blob_from_file(layout, &c.source)?;
        let config = json!({
            "created": rfc3339(ctx),
            "architecture": "wasm",
            "os": if is_component { "wasip2" } else { "wasip1" },
            "layerDigests": [digest.to_string()],
        });
        let (config_digest, config_size) = write_json_blob(layout, &config)?;
        let annotations = annotations(
            ctx,
            &[
                ("title", self.name.clone()),
                ("version", self.version.clone()),
            ],
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": WASM_CONFIG_MEDIA_TYPE,
            "config": {
                "mediaType": WASM_CONFIG_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": [{"mediaType": WASM_MEDIA_TYPE, "digest": digest.to_string(), "size": size}],
            "annotations": annotations,
        });
        write_json_blob(layout, &manifest)
    }
}

/// Manifest annotations: `org.opencontainers.image.created` from `ctx`, then each of `fields`
/// (`org.opencontainers.image.` suffix, value) that is not empty.
fn annotations(ctx: &BuildContext, fields: &[(&str, String)]) -> serde_json::Map<String, Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "org.opencontainers.image.created".into(),
        rfc3339(ctx).into(),
    );
    for (key, value) in fields {
        if !value.is_empty() {
            annotations.insert(
                format!("org.opencontainers.image.{key}"),
                value.clone().into(),
            );
        }
    }
    annotations
}
