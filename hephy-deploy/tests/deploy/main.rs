//! Integration tests of hephy-deploy.

mod ledger;
mod local;
mod support;
mod unpack;
mod gitops;
mod kubernetes;
mod manifests;
