//! Entry points of the fuzz targets in `fuzz/` (compiled only with `--cfg fuzzing`, which
//! `cargo fuzz` sets; not part of the API). Each runs a parser the way a push does and panics
//! when an invariant breaks.

use crate::check::{self, Tok};
use crate::dockerfile::parse::{expand, Dockerfile, StagePlatform};

/// Parses a Dockerfile as the dockerfile backend does (stages, the stages a target needs, where
/// they run, their bases with `ARG`s substituted).
pub fn dockerfile(text: &str) {
    let Ok(df) = Dockerfile::parse(text) else {
        return;
    };
    assert!(!df.stages.is_empty(), "a parsed Dockerfile has a stage");
    let vars = |name: &str| {
        df.global_args
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, d)| d.clone())
    };
    let mut targets: Vec<Option<String>> = vec![None];
    targets.extend(df.stages.iter().filter_map(|s| s.name.clone()).map(Some));
    targets.push(Some("0".into()));
    for target in targets {
        let Ok(needed) = df.needed_stages(target.as_deref()) else {
            continue;
        };
        assert!(!needed.is_empty(), "a build needs its target stage");
        assert!(
            needed.windows(2).all(|w| w[0] < w[1]),
            "needed stages are in order"
        );
        assert!(
            needed.iter().all(|&i| i < df.stages.len()),
            "needed stages exist"
        );
        if target.is_none() {
            assert_eq!(needed.last(), Some(&(df.stages.len() - 1)));
        }
        for &i in &needed {
            if let StagePlatform::Fixed(p) = df.stage_platform(i) {
                let _ = p.to_string();
            }
            let stage = &df.stages[i];
            if df.stage_index(&stage.base, i).is_none() {
                let _ = expand(&stage.base, &vars);
            }
        }
    }
}

/// Evaluates the Go source `src` (named `name`) as the cgo check does, and its `//go:build`
/// expression against a plain recursive evaluator of Go's grammar.
pub fn go_source(name: &str, src: &str) {
    let _ = check::go_file_name_matches_linux(name);
    let _ = check::go_build_constraint_ok(src);
    let _ = check::go_imports_c(src);
    for line in src.lines() {
        if let Some(expr) = line.trim().strip_prefix("//go:build") {
            let got = check::eval_constraint(expr);
            // The reference recurses: only short expressions, whose depth cannot hurt.
            if expr.len() <= 512 {
                let want = check::constraint_tokens(expr).and_then(|t| reference_eval(&t));
                assert_eq!(got, want, "//go:build{expr}");
            }
        }
    }
}

/// Go's `//go:build` grammar, by recursive descent: `||` of `&&` of `!`, parentheses, tags.
fn reference_eval(tokens: &[Tok]) -> Option<bool> {
    fn or(t: &[Tok], i: &mut usize) -> Option<bool> {
        let mut v = and(t, i)?;
        while t.get(*i) == Some(&Tok::Or) {
            *i += 1;
            let r = and(t, i)?;
            v = v || r;
        }
        Some(v)
    }
    fn and(t: &[Tok], i: &mut usize) -> Option<bool> {
        let mut v = not(t, i)?;
        while t.get(*i) == Some(&Tok::And) {
            *i += 1;
            let r = not(t, i)?;
            v = v && r;
        }
        Some(v)
    }
    fn not(t: &[Tok], i: &mut usize) -> Option<bool> {
        match t.get(*i)? {
            Tok::Not => {
                *i += 1;
                not(t, i).map(|v| !v)
            }
            Tok::Open => {
                *i += 1;
                let v = or(t, i)?;
                if t.get(*i) != Some(&Tok::Close) {
                    return None;
                }
                *i += 1;
                Some(v)
            }
            Tok::Tag(v) => {
                *i += 1;
                Some(*v)
            }
            _ => None,
        }
    }
    let mut i = 0;
    let v = or(tokens, &mut i)?;
    (i == tokens.len()).then_some(v)
}
