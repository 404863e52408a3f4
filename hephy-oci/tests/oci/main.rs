//! Integration tests of hephy-oci: layers and OCI layouts.

mod layer;
mod layout;
