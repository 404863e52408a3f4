//! The [`Publisher`] trait: puts built images where deployers can pull them.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{AppName, BoxError, BuiltImage, Digest, Events, Platform, Reference};

/// What to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishRequest {
    /// The app the images belong to; publishers derive the repository from it.
    pub app: AppName,
    /// The tag to publish under, such as `git-1a2b3c4`.
    pub tag: String,
    /// One image per platform (or one platform-less artifact).
    pub images: Vec<BuiltImage>,
    /// Annotations for the index, such as `org.opencontainers.image.revision`.
    pub annotations: BTreeMap<String, String>,
}

impl PublishRequest {
    /// A request to publish `images` for `app` under `tag`.
    pub fn new(app: AppName, tag: impl Into<String>, images: Vec<BuiltImage>) -> Self {
        PublishRequest {
            app,
            tag: tag.into(),
            images,
            annotations: BTreeMap::new(),
        }
    }

    /// Adds an annotation.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// What was published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The reference, tagged and pinned to the digest.
    pub reference: Reference,
    /// The digest of the manifest, or of the index when there are several platforms.
    pub digest: Digest,
    /// The platforms published.
    pub platforms: Vec<Platform>,
    /// Whether the digest is an image index.
    pub is_index: bool,
}

impl Published {
    /// A publication.
    pub fn new(
        reference: Reference,
        digest: Digest,
        platforms: Vec<Platform>,
        is_index: bool,
    ) -> Self {
        Published {
            reference: reference.with_digest(digest.clone()),
            digest,
            platforms,
            is_index,
        }
    }
}

/// The error returned by [`Publisher::publish`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The registry refused the credentials.
    #[error("registry {registry} refused the credentials: {hint}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What to do.
        hint: String,
    },
    /// The registry could not be reached.
    #[error("cannot reach registry {registry}: {message}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// What happened and what to check.
        message: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
    /// The request cannot be published (no images, a broken layout).
    #[error("{problem}")]
    Invalid {
        /// What is wrong.
        problem: String,
    },
    /// Anything else.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
}

impl PublishError {
    /// A [`PublishError::Other`] from any error.
    pub fn other(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        PublishError::Other {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Publishes built images: to an OCI registry, or to an OCI layout on disk.
///
/// Several images are published as one image index; one image as its manifest.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes the request's images and returns where they are, pinned by digest.
    async fn publish(
        &self,
        request: &PublishRequest,
        events: &Events,
    ) -> Result<Published, PublishError>;
}

#[async_trait]
impl<T: Publisher + ?Sized> Publisher for Arc<T> {
    async fn publish(
        &self,
        request: &PublishRequest,
        events: &Events,
    ) -> Result<Published, PublishError> {
        (**self).publish(request, events).await
    }
}

#[async_trait]
impl<T: Publisher + ?Sized> Publisher for Box<T> {
    async fn publish(
        &self,
        request: &PublishRequest,
        events: &Events,
    ) -> Result<Published, PublishError> {
        (**self).publish(request, events).await
    }
}
