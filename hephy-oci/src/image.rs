//! [`ImageBuilder`]: an OCI image from a base plus new layers, written into an [`OciLayout`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use hephy_core::{BuildContext, BuildError, Digest, Platform};
use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageManifest, MediaType, Os, RootFs,
    ANNOTATION_BASE_IMAGE_DIGEST, ANNOTATION_BASE_IMAGE_NAME, ANNOTATION_CREATED,
    ANNOTATION_REVISION, ANNOTATION_SOURCE,
};

use crate::base::ResolvedBase;
use crate::layer::{
    normalize, plan_layers, scan_dir, write_layers, Compression, Entry, Layer, LayerError,
    LayerOptions, SplitOptions,
};
use crate::layout::{from_oci_digest, to_oci_platform, LayoutError, OciLayout};

/// The error returned by [`ImageBuilder::write`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A layer could not be made.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The layout could not be written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// oci-spec refused a value.
    #[error("cannot build the image {what}: {message}")]
    Spec {
        /// What was being built.
        what: &'static str,
        /// Why.
        message: String,
    },
}

impl From<ImageError> for BuildError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Layer(LayerError::SymlinkEscapes { .. })
            | ImageError::Layer(LayerError::UnsupportedFile { .. })
            | ImageError::Layer(LayerError::InvalidPath { .. }) => BuildError::InvalidContext {
                problem: e.to_string(),
            },
            other => BuildError::other(format!("cannot write the image: {other}"), other),
        }
    }
}

type Skip = Arc<dyn Fn(&str) -> bool + Send + Sync>;

enum LayerSource {
    Dir {
        root: PathBuf,
        prefix: String,
        skip: Skip,
        split: Option<SplitOptions>,
    },
    Entries(Vec<Entry>),
}

/// What [`ImageBuilder::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WrittenImage {
    /// The manifest's descriptor (with its platform).
    pub manifest: Descriptor,
    /// The manifest's digest.
    pub digest: Digest,
    /// The config's digest.
    pub config: Digest,
    /// The layers added on top of the base.
    pub new_layers: Vec<Layer>,
}

/// Assembles an image deterministically: a base's layers and config, new layers from directory
/// trees or in-memory files, and the run settings. The same inputs give the same bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use hephy_oci::{image::ImageBuilder, layer::Entry, layout::OciLayout};
/// use hephy_core::Platform;
/// let dir = std::env::temp_dir().join(format!("hephy-image-doc-{}", std::process::id()));
/// let layout = OciLayout::create(&dir)?;
/// let image = ImageBuilder::new(Platform::linux_amd64())
///     .entries(vec![Entry::bytes("hello.txt", b"hi\n".to_vec(), 0o644)])
///     .entrypoint(["/bin/cat", "/hello.txt"])
///     .write(&layout, Some("latest"))
///     .await?;
/// assert_eq!(layout.resolve("latest")?.map(|d| d.size()), Some(image.manifest.size()));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ImageBuilder {
    platform: Platform,
    base: Option<ResolvedBase>,
    layers: Vec<LayerSource>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    user: Option<String>,
    workdir: Option<String>,
    ports: Vec<u16>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    created: SystemTime,
    layer_options: LayerOptions,
}

impl std::fmt::Debug for ImageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("platform", &self.platform)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl ImageBuilder {
    /// An empty image (no base) for `platform`, created at the Unix epoch.
    pub fn new(platform: Platform) -> Self {
        ImageBuilder {
            platform,
            base: None,
            layers: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            workdir: None,
            ports: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created: SystemTime::UNIX_EPOCH,
            layer_options: LayerOptions::default(),
        }
    }

    /// An image for `platform` stamped from a build context: created at its
    /// [`source_date_epoch`](BuildContext::source_date_epoch) (also every file's mtime), with the
    /// revision annotation and label when the context has a revision.
    pub fn for_context(ctx: &BuildContext, platform: Platform) -> Self {
        let mut b = ImageBuilder::new(platform).created(ctx.source_date_epoch());
        if let Some(r) = ctx.revision() {
            if !r.commit.is_empty() {
                b = b.annotation(ANNOTATION_REVISION, &r.commit);
                b = b.label(ANNOTATION_REVISION, &r.commit);
            }
        }
        b
    }

    /// Starts from `base`, whose blobs are already in the layout written to.
    pub fn base(mut self, base: ResolvedBase) -> Self {
        self.base = Some(base);
        self
    }

    /// Adds the tree at `root` under `prefix` in the image as one layer.
    pub fn dir(self, root: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        self.dir_filtered(root, prefix, |_| false, None)
    }

    /// Adds the tree at `root` under `prefix`, leaving out paths (relative to `root`) for which
    /// `skip` is true, split into several layers by `split` (see [`plan_layers`]) when given.
    pub fn dir_filtered(
        mut self,
        root: impl Into<PathBuf>,
        prefix: impl Into<String>,
        skip: impl Fn(&str) -> bool + Send + Sync + 'static,
        split: Option<SplitOptions>,
    ) -> Self {
        self.layers.push(LayerSource::Dir {
            root: root.into(),
            prefix: prefix.into(),
            skip: Arc::new(skip),
            split,
        });
        self
    }

    /// Adds one layer of entries (parent directories are added as needed).
    pub fn entries(mut self, entries: Vec<Entry>) -> Self {
        self.layers.push(LayerSource::Entries(entries));
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the command (the entrypoint's default arguments).
    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets an environment variable (replacing the base's value).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the user (`65532`, `app`, `1000:1000`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the working directory.
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Declares a TCP port the app listens on.
    pub fn expose(mut self, port: u16) -> Self {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
        self
    }

    /// Adds a config label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets the source repository (`org.opencontainers.image.source`).
    pub fn source(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.annotation(ANNOTATION_SOURCE, url.clone())
            .label(ANNOTATION_SOURCE, url)
    }

    /// Sets the creation time (config `created`, the `created` annotation, every file's mtime).
    pub fn created(mut self, t: SystemTime) -> Self {
        self.created = t;
        self.layer_options.mtime = t;
        self
    }

    /// Sets the layer compression.
    pub fn compression(mut self, c: Compression) -> Self {
        self.layer_options.compression = c;
        self
    }

    /// Sets all layer options (note: [`ImageBuilder::created`] also sets the mtime).
    pub fn layer_options(mut self, opts: LayerOptions) -> Self {
        self.layer_options = opts;
        self
    }

    /// Writes the layers, config and manifest into `layout`, names the manifest `ref_name` in
    /// `index.json` when given, and returns what was written. Layers are compressed in parallel.
    pub async fn write(
        self,
        layout: &OciLayout,
        ref_name: Option<&str>,
    ) -> Result<WrittenImage, ImageError> {
        // Plan every new layer first (scanning is cheap), then compress them all at once.
        let mut planned: Vec<Vec<Entry>> = Vec::new();
        for src in self.layers {
            match src {
                LayerSource::Entries(e) => planned.push(normalize(e)?),
                LayerSource::Dir {
                    root,
                    prefix,
                    skip,
                    split,
                } => {
                    let entries = tokio::task::spawn_blocking(move || {
                        scan_dir(&root, &prefix, &move |p: &str| skip(p))
                    })
                    .await
                    .map_err(|e| LayerError::Task(e.to_string()))??;
                    match split {
                        Some(opts) => planned.extend(plan_layers(entries, &opts)),
                        None => planned.push(entries),
                    }
                }
            }
        }
        planned.retain(|l| !l.is_empty());
        let new_layers = write_layers(layout, planned, self.layer_options).await?;

        let created = rfc3339(self.created);
        let spec = |what: &'static str| {
            move |e: oci_spec::OciSpecError| ImageError::Spec {
                what,
                message: e.to_string(),
            }
        };

        // The config: the base's, with our platform, layers, history and run settings.
        let (mut config, mut base_layers, base_name, base_digest) = match self.base {
            Some(b) => (b.config, b.layers, b.name, b.digest),
            None => (ImageConfiguration::default(), Vec::new(), None, None),
        };
        config.set_architecture(Arch::from(self.platform.architecture()));
        config.set_os(Os::from(self.platform.os()));
        config.set_variant(self.platform.variant().map(str::to_owned));
        config.set_created(Some(created.clone()));
        config.set_author(None);
        let mut diff_ids = if base_layers.is_empty() {
            Vec::new()
        } else {
            config.rootfs().diff_ids().clone()
        };
        diff_ids.extend(new_layers.iter().map(|l| l.diff_id.to_string()));
        let mut rootfs = RootFs::default();
        rootfs.set_typ("layers".to_owned());
        rootfs.set_diff_ids(diff_ids);
        config.set_rootfs(rootfs);
        let mut history = config.history().clone().unwrap_or_default();
        for _ in &new_layers {
            let mut h = History::default();
            h.set_created(Some(created.clone()));
            h.set_created_by(Some("hephy".to_owned()));
            history.push(h);
        }
        config.set_history(Some(history));

        let mut run = config.config().clone().unwrap_or_else(Config::default);
        if let Some(ep) = self.entrypoint {
            run.set_entrypoint(Some(ep));
            // A new entrypoint makes the base's command meaningless, as Dockerfiles do.
            run.set_cmd(None);
        }
        if let Some(cmd) = self.cmd {
            run.set_cmd(Some(cmd));
        }
        let mut env: Vec<String> = run.env().clone().unwrap_or_default();
        for (k, v) in &self.env {
            let prefix = format!("{k}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{k}={v}"));
        }
        if !env.is_empty() {
            run.set_env(Some(env));
        }
        if let Some(u) = self.user {
            run.set_user(Some(u));
        }
        if let Some(w) = self.workdir {
            run.set_working_dir(Some(w));
        }
        if !self.ports.is_empty() {
            let mut ports = run.exposed_ports().clone().unwrap_or_default();
            for p in self.ports {
                let s = format!("{p}/tcp");
                if !ports.contains(&s) {
                    ports.push(s);
                }
            }
            ports.sort();
            run.set_exposed_ports(Some(ports));
        }
        let mut labels: HashMap<String, String> = run.labels().clone().unwrap_or_default();
        labels.extend(self.labels);
        if !labels.is_empty() {
            run.set_labels(Some(labels));
        }
        config.set_config(Some(run));
        let config_desc = layout.write_json(MediaType::ImageConfig, &config)?;

        // The manifest.
        base_layers.extend(new_layers.iter().map(Layer::descriptor));
        let mut annotations: HashMap<String, String> = self.annotations.into_iter().collect();
        annotations.insert(ANNOTATION_CREATED.to_owned(), created);
        if let Some(n) = base_name {
            annotations.insert(ANNOTATION_BASE_IMAGE_NAME.to_owned(), n);
        }
        if let Some(d) = base_digest {
            annotations.insert(ANNOTATION_BASE_IMAGE_DIGEST.to_owned(), d.to_string());
        }
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc.clone())
            .layers(base_layers)
            .annotations(annotations)
            .build()
            .map_err(spec("manifest"))?;
        let manifest: ImageManifest = manifest;
        let mut desc = layout.write_json(MediaType::ImageManifest, &manifest)?;
        desc.set_platform(Some(
            to_oci_platform(&self.platform).map_err(spec("platform"))?,
        ));
        layout.add_manifest(&desc, ref_name)?;
        let digest = from_oci_digest(desc.digest()).map_err(|e| ImageError::Spec {
            what: "manifest digest",
            message: e.to_string(),
        })?;
        let config = from_oci_digest(config_desc.digest()).map_err(|e| ImageError::Spec {
            what: "config digest",
            message: e.to_string(),
        })?;
        Ok(WrittenImage {
            manifest: desc,
            digest,
            config,
            new_layers,
        })
    }
}
