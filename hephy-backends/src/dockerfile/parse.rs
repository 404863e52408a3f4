//! Dockerfile parsing, just enough to check what a builder can do before running it: stages,
//! instructions with their flags, heredocs, and which stages a target needs.

use std::collections::BTreeSet;

use hephy_core::Platform;

/// The most `FROM` stages a Dockerfile may have. Real ones have a handful; without a cap a
/// 1 MB file of `FROM N` lines makes hundreds of thousands of stages, and finding which ones a
/// target needs compares each with all before it.
pub(crate) const MAX_STAGES: usize = 256;

/// A parsed Dockerfile: its stages and their instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dockerfile {
    /// The `# syntax=` directive, if any.
    pub syntax: Option<String>,
    /// `ARG`s before the first `FROM` (the only ones `FROM` may use), with their defaults.
    pub global_args: Vec<(String, Option<String>)>,
    /// The stages, in order.
    pub stages: Vec<DfStage>,
}

/// One `FROM` stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DfStage {
    /// 1-based line of its `FROM`.
    pub line: usize,
    /// `AS name`.
    pub name: Option<String>,
    /// The image or stage it starts from.
    pub base: String,
    /// `--platform=` of the `FROM`.
    pub platform: Option<String>,
    /// Its instructions after `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// 1-based line it starts on.
    pub line: usize,
    /// Upper-case keyword.
    pub keyword: String,
    /// `--name=value` flags before the arguments.
    pub flags: Vec<(String, String)>,
    /// The rest of the line.
    pub args: String,
    /// Whether it uses a heredoc.
    pub heredoc: bool,
}

impl Instruction {
    pub(super) fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum StagePlatform {
    /// `--platform=$BUILDPLATFORM`: runs natively.
    Build,
    /// The platform being built.
    Target,
    /// A fixed platform.
    Fixed(Platform),
}

impl Dockerfile {
    /// Parses Dockerfile text; errors start with the line number.
    pub fn parse(text: &str) -> Result<Dockerfile, String> {
        let lines: Vec<&str> = text.lines().collect();
        let mut df = Dockerfile::default();
        let mut escape = '\\';
        let mut i = 0;
        // Parser directives: only at the very top, before any other line.
        while i < lines.len() {
            let l = lines[i].trim();
            let Some(d) = l.strip_prefix('#') else { break };
            let Some((k, v)) = d.split_once('=') else {
                break;
            };
            let k = k.trim().to_ascii_lowercase();
            match k.as_str() {
                "escape" => escape = v.trim().chars().next().unwrap_or('\\'),
                "syntax" => df.syntax = Some(v.trim().to_owned()),
                "check" => {}
                _ => break,
            }
            i += 1;
        }
        while i < lines.len() {
            let start = i + 1;
            let first = lines[i].trim_start();
            i += 1;
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            // Join continuation lines; comment lines inside a continuation are dropped.
            let mut logical = String::new();
            let mut cur = first.to_owned();
            loop {
                let trimmed = cur.trim_end();
                if let Some(body) = trimmed.strip_suffix(escape) {
                    logical.push_str(body);
                    logical.push(' ');
                    // Next non-comment line continues.
                    loop {
                        if i >= lines.len() {
                            cur = String::new();
                            break;
                        }
                        let next = lines[i];
                        i += 1;
                        if next.trim_start().starts_with('#') {
                            continue;
                        }
                        cur = next.to_owned();
                        break;
                    }
                    if i >= lines.len() && cur.is_empty() {
                        break;
                    }
                } else {
                    logical.push_str(trimmed);
                    break;
                }
            }
            let (kw, rest) = match logical.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (logical.as_str(), ""),
            };
            let keyword = kw.to_ascii_uppercase();
            let mut args = rest;
            let mut flags = vec![];
            if matches!(keyword.as_str(), "FROM" | "RUN" | "COPY" | "ADD") {
                while let Some(f) = args.strip_prefix("--") {
                    let end = f.find(char::is_whitespace).unwrap_or(f.len());
                    let (flag, after) = f.split_at(end);
                    let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                    flags.push((k.to_ascii_lowercase(), v.to_owned()));
                    args = after.trim_start();
                }
            }
            // Heredocs: `<<EOF`, `<<-EOF`, `<<"EOF"`; their bodies are not instructions.
            let mut heredoc = false;
            if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
                for word in heredoc_words(args) {
                    heredoc = true;
                    let (strip_tabs, word) = match word.strip_prefix('-') {
                        Some(w) => (true, w),
                        None => (false, word.as_str()),
                    };
                    let word = word.trim_matches(|c| c == '"' || c == '\'');
                    loop {
                        if i >= lines.len() {
                            return Err(format!(
                                "{start}: heredoc <<{word} is never closed: end it with a line holding only {word}"
                            ));
                        }
                        let l = lines[i];
                        i += 1;
                        let l = if strip_tabs {
                            l.trim_start_matches('\t')
                        } else {
                            l
                        };
                        if l.trim_end() == word {
                            break;
                        }
                    }
                }
            }
            let ins = Instruction {
                line: start,
                keyword: keyword.clone(),
                flags,
                args: args.to_owned(),
                heredoc,
            };
            if keyword == "FROM" {
                let mut words = ins.args.split_whitespace();
                let base = words
                    .next()
                    .ok_or_else(|| {
                        format!("{start}: FROM needs an image: write FROM image[:tag] [AS name]")
                    })?
                    .to_owned();
                let name = match (words.next(), words.next()) {
                    (Some(a), Some(n)) if a.eq_ignore_ascii_case("as") => {
                        Some(n.to_ascii_lowercase())
                    }
                    (None, _) => None,
                    _ => {
                        return Err(format!(
                            "{start}: cannot read {:?}: write FROM image[:tag] [AS name]",
                            logical.trim()
                        ))
                    }
                };
                let platform = ins.flag_values("platform").next().map(str::to_owned);
                if df.stages.len() == MAX_STAGES {
                    return Err(format!(
                        "{start}: the Dockerfile has more than {MAX_STAGES} stages; the limit is {MAX_STAGES}: merge stages, or build the image in parts"
                    ));
                }
                df.stages.push(DfStage {
                    line: start,
                    name,
                    base,
                    platform,
                    instructions: vec![],
                });
            } else {
                match df.stages.last_mut() {
                    Some(s) => s.instructions.push(ins),
                    None if keyword == "ARG" => {
                        for word in ins.args.split_whitespace() {
                            let (name, default) = match word.split_once('=') {
                                Some((n, d)) => (n, Some(d.trim_matches(|c| c == '"' || c == '\'').to_owned())),
                                None => (word, None),
                            };
                            df.global_args.push((name.to_owned(), default));
                        }
                    }
                    None => {
                        return Err(format!(
                            "{start}: {keyword} comes before the first FROM: start the Dockerfile with FROM (only ARG may come before it)"
                        ))
                    }
                }
            }
        }
        if df.stages.is_empty() {
            return Err(
                "1: the Dockerfile has no FROM: start it with FROM image[:tag], or FROM scratch"
                    .into(),
            );
        }
        Ok(df)
    }

    pub(crate) fn stage_index(&self, name_or_index: &str, before: usize) -> Option<usize> {
        let n = name_or_index.to_ascii_lowercase();
        if let Some(i) = self.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(n.as_str()))
        {
            return Some(i);
        }
        n.parse::<usize>().ok().filter(|i| *i < before)
    }

    /// The stages a build of `target` (default: the last stage) needs, in order.
    pub fn needed_stages(&self, target: Option<&str>) -> Result<Vec<usize>, String> {
        let last = match target {
            None => self.stages.len() - 1,
            Some(t) => self.stage_index(t, self.stages.len()).ok_or_else(|| {
                let names: Vec<String> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_ref().map(|n| format!("{n:?}")))
                    .collect();
                format!(
                    "[build.dockerfile] target {t:?} is not a stage of the Dockerfile: use one of {}",
                    if names.is_empty() { "its stage numbers (it names no stages)".to_owned() } else { names.join(", ") }
                )
            })?,
        };
        let mut needed = BTreeSet::new();
        let mut todo = vec![last];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let s = &self.stages[i];
            if let Some(b) = self.stage_index(&s.base, i) {
                todo.push(b);
            }
            for ins in &s.instructions {
                let from = ins.flag_values("from").map(str::to_owned).chain(
                    ins.flag_values("mount").filter_map(|m| {
                        m.split(',')
                            .find_map(|kv| kv.trim().strip_prefix("from="))
                            .map(str::to_owned)
                    }),
                );
                for f in from.collect::<Vec<_>>() {
                    if let Some(b) = self.stage_index(&f, i) {
                        todo.push(b);
                    }
                }
            }
        }
        Ok(needed.into_iter().collect())
    }

    /// Where stage `i`'s `RUN`s execute: its `--platform`, else that of the stage it starts
    /// from. A loop, not recursion: the file decides how long a chain of stages is.
    pub fn stage_platform(&self, mut i: usize) -> StagePlatform {
        loop {
            let s = &self.stages[i];
            let Some(p) = s.platform.as_deref() else {
                // A stage can only start from an earlier one, so the chain ends.
                match self.stage_index(&s.base, i) {
                    Some(b) => i = b,
                    None => return StagePlatform::Target,
                }
                continue;
            };
            let p = p.trim_matches('"');
            return if p.contains("BUILDPLATFORM") {
                StagePlatform::Build
            } else if p.contains("TARGETPLATFORM") || p.contains('$') {
                StagePlatform::Target
            } else {
                match p.parse() {
                    Ok(p) => StagePlatform::Fixed(p),
                    Err(_) => StagePlatform::Target,
                }
            };
        }
    }
}

fn heredoc_words(args: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = args;
    while let Some(pos) = rest.find("<<") {
        let after = &rest[pos + 2..];
        let word: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\''))
            .collect();
        let bare = word
            .trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'');
        // `<<` followed by a word that starts with a letter or `_` (not `<<<` or `<< 5`).
        if !bare.is_empty()
            && bare
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            out.push(word.clone());
        }
        rest = &after[word.len()..];
    }
    out
}

pub(super) fn mount_type(spec: &str) -> &str {
    spec.split(',')
        .find_map(|kv| kv.trim().strip_prefix("type="))
        .unwrap_or("bind")
}

/// `text` with `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}` replaced from `vars`
/// (a name without a value becomes empty, as builders do); `None` for any other form, whose
/// result hephy cannot tell.
pub(crate) fn expand(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let mut inner = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        c => inner.push(c),
                    }
                }
                let name_end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
                let (name, op) = inner.split_at(name_end);
                let value = vars(name).filter(|v| !v.is_empty());
                match op {
                    "" => out.push_str(&value.unwrap_or_default()),
                    _ if op.starts_with(":-") => {
                        let word = expand(&op[2..], vars)?;
                        out.push_str(&value.unwrap_or(word));
                    }
                    _ if op.starts_with(":+") => {
                        if value.is_some() {
                            out.push_str(&expand(&op[2..], vars)?);
                        }
                    }
                    _ => return None,
                }
            }
            '$' if chars.peek().is_some_and(|c| is_name(*c)) => {
                let mut name = String::new();
                while let Some(c) = chars.peek().copied().filter(|c| is_name(*c)) {
                    name.push(c);
                    chars.next();
                }
                out.push_str(&vars(&name).unwrap_or_default());
            }
            c => out.push(c),
        }
    }
    Some(out)
}
