//! A snapshot of hephy-core's public API, so every change to it is deliberate and visible in
//! review. (`cargo public-api` needs a nightly toolchain; this walks the source with `syn`.)

use std::collections::BTreeSet;
use std::path::Path;

use quote::ToTokens;
use syn::{ImplItem, Item, TraitItem, Visibility};

use crate::Result;

fn is_pub(v: &Visibility) -> bool {
    matches!(v, Visibility::Public(_))
}

fn tokens(t: &impl ToTokens) -> String {
    t.to_token_stream().to_string()
}

fn marks(attrs: &[syn::Attribute]) -> String {
    let mut m = vec![];
    for a in attrs {
        if a.path().is_ident("non_exhaustive") {
            m.push("#[non_exhaustive] ");
        }
    }
    m.concat()
}

fn derives(attrs: &[syn::Attribute]) -> String {
    let mut out = vec![];
    for a in attrs {
        if a.path().is_ident("derive") {
            if let Ok(list) = a.meta.require_list() {
                out.push(list.tokens.to_string());
            }
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" derives({})", out.join(", "))
    }
}

/// The names of the crate's private structs and enums: their impls are not API.
fn private_types(items: &[Item], out: &mut BTreeSet<String>) {
    for item in items {
        match item {
            Item::Struct(s) if !is_pub(&s.vis) => {
                out.insert(s.ident.to_string());
            }
            Item::Enum(e) if !is_pub(&e.vis) => {
                out.insert(e.ident.to_string());
            }
            _ => {}
        }
    }
}

/// Whether `ty` names one of the `private` types.
fn is_private(ty: &syn::Type, private: &BTreeSet<String>) -> bool {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| private.contains(&s.ident.to_string())),
        _ => false,
    }
}

fn walk(module: &str, items: &[Item], private: &BTreeSet<String>, out: &mut Vec<String>) {
    for item in items {
        match item {
            Item::Struct(s) if is_pub(&s.vis) => {
                let fields: Vec<String> = s
                    .fields
                    .iter()
                    .filter(|f| is_pub(&f.vis))
                    .map(|f| {
                        format!(
                            "{}: {}",
                            f.ident.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                            tokens(&f.ty)
                        )
                    })
                    .collect();
                out.push(format!(
                    "{module}: {}pub struct {}{}{} {{ {} }}",
                    marks(&s.attrs),
                    s.ident,
                    tokens(&s.generics),
                    derives(&s.attrs),
                    fields.join(", ")
                ));
            }
            Item::Enum(e) if is_pub(&e.vis) => {
                let variants: Vec<String> = e
                    .variants
                    .iter()
                    .map(|v| {
                        let fields: Vec<String> = v
                            .fields
                            .iter()
                            .map(|f| match &f.ident {
                                Some(i) => format!("{i}: {}", tokens(&f.ty)),
                                None => tokens(&f.ty),
                            })
                            .collect();
                        if fields.is_empty() {
                            v.ident.to_string()
                        } else {
                            format!("{}({})", v.ident, fields.join(", "))
                        }
                    })
                    .collect();
                out.push(format!(
                    "{module}: {}pub enum {}{} {{ {} }}",
                    marks(&e.attrs),
                    e.ident,
                    derives(&e.attrs),
                    variants.join(", ")
                ));
            }
            Item::Trait(t) if is_pub(&t.vis) => {
                out.push(format!(
                    "{module}: pub trait {}: {}",
                    t.ident,
                    tokens(&t.supertraits)
                ));
                for ti in &t.items {
                    if let TraitItem::Fn(f) = ti {
                        let default = if f.default.is_some() {
                            " (provided)"
                        } else {
                            ""
                        };
                        out.push(format!(
                            "{module}:   trait {} {}{default}",
                            t.ident,
                            tokens(&f.sig)
                        ));
                    }
                }
            }
            Item::Fn(f) if is_pub(&f.vis) => {
                out.push(format!("{module}: pub {}", tokens(&f.sig)));
            }
            Item::Const(c) if is_pub(&c.vis) => {
                out.push(format!(
                    "{module}: pub const {}: {}",
                    c.ident,
                    tokens(&c.ty)
                ));
            }
            Item::Type(t) if is_pub(&t.vis) => {
                out.push(format!(
                    "{module}: pub type {} = {}",
                    t.ident,
                    tokens(&t.ty)
                ));
            }
            Item::Use(u) if is_pub(&u.vis) => {
                out.push(format!("{module}: pub use {}", tokens(&u.tree)));
            }
            Item::Impl(i) if !is_private(&i.self_ty, private) => {
                let header = match &i.trait_ {
                    Some((_, path, _)) => {
                        format!("impl {} for {}", tokens(path), tokens(&i.self_ty))
                    }
                    None => format!("impl {}", tokens(&i.self_ty)),
                };
                if i.trait_.is_some() {
                    out.push(format!("{module}: {header}"));
                    continue;
                }
                for ii in &i.items {
                    match ii {
                        ImplItem::Fn(f) if is_pub(&f.vis) => {
                            out.push(format!("{module}: {header} :: {}", tokens(&f.sig)));
                        }
                        ImplItem::Const(c) if is_pub(&c.vis) => {
                            out.push(format!(
                                "{module}: {header} :: const {}: {}",
                                c.ident,
                                tokens(&c.ty)
                            ));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Each source file of hephy-core, by module name, parsed.
pub(crate) fn parsed_sources() -> Result<Vec<(String, syn::File)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut parsed = vec![];
    for f in files {
        let module = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        parsed.push((module, syn::parse_file(&std::fs::read_to_string(&f)?)?));
    }
    Ok(parsed)
}

/// The public structs, enums and type aliases of hephy-core, as `module::Name`: the types whose
/// auto traits `auto_traits.rs` pins.
pub(crate) fn public_types() -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (module, file) in parsed_sources()? {
        for item in &file.items {
            let ident = match item {
                Item::Struct(s) if is_pub(&s.vis) => &s.ident,
                Item::Enum(e) if is_pub(&e.vis) => &e.ident,
                Item::Type(t) if is_pub(&t.vis) => &t.ident,
                _ => continue,
            };
            out.insert(format!("{module}::{ident}"));
        }
    }
    Ok(out)
}

#[test]
fn public_api() -> Result {
    let parsed = parsed_sources()?;
    let mut private = BTreeSet::new();
    for (_, file) in &parsed {
        private_types(&file.items, &mut private);
    }
    let mut out = vec![];
    for (module, file) in &parsed {
        walk(module, &file.items, &private, &mut out);
    }
    insta::assert_snapshot!(out.join("\n"));
    Ok(())
}

/// Words that mark a package description nobody wrote.
const PLACEHOLDERS: &[&str] = &["todo", "tbd", "placeholder", "lorem", "fixme"];

#[test]
fn every_package_of_the_workspace_has_a_real_description() -> Result {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("hephy-core has no parent directory")?;
    let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))?.parse()?;
    let members = workspace
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .ok_or("the root Cargo.toml lists no workspace members")?;
    for member in members {
        let member = member.as_str().ok_or("a member is not a string")?;
        let manifest: toml::Table =
            std::fs::read_to_string(root.join(member).join("Cargo.toml"))?.parse()?;
        let description = manifest
            .get("package")
            .and_then(|p| p.get("description"))
            .and_then(|d| d.as_str())
            .ok_or(format!("{member}/Cargo.toml has no package description"))?;
        let lower = description.to_lowercase();
        assert!(
            description.split_whitespace().count() >= 6
                && !PLACEHOLDERS.iter().any(|p| lower.contains(p)),
            "{member}/Cargo.toml's description {description:?} does not say what the package is for"
        );
    }
    Ok(())
}
