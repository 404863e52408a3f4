//! Integration tests of hephy-deploy.

mod gitops;
mod kubernetes;
mod ledger;
mod local;
mod manifests;
mod router;
mod support;
mod unpack;
