//! hephy-deploy: under construction.
