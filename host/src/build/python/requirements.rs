//! A Python plugin's dependency list, read the way pip reads it and held to
//! the build's policy: pure-Python wheels for any platform, over HTTPS, with
//! nothing built from source on the machine that builds.
//!
//! pip lets a requirements file's own options override the command line's
//! (`--no-binary :all:` turns sdists back on, and installing an sdist runs its
//! `setup.py`), so every option is checked against an allow-list, and so is
//! every requirement (no direct URL but an `https://` wheel, no local path, no
//! `-e`). Files included with `-r` and `-c` are read here, checked the same
//! way and inlined, each once: what pip is given is what was checked, and it
//! is also what names the installed dependencies, so a change to an included
//! file installs them again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A plugin's dependencies: pip requirement lines from `requirements.txt` (and
/// the files it includes) and `pyproject.toml`'s `[project] dependencies`,
/// without `optech-sdk` (the build brings its own).
#[derive(Debug, Default, PartialEq)]
pub struct Requirements {
    /// The lines pip installs from, as written (continuations joined,
    /// comments removed), every included requirements file inlined.
    pub lines: Vec<Line>,
    /// The lines of the included constraints files (`-c`), given to pip as one.
    pub constraints: Vec<Line>,
}

/// One logical line of a requirements file.
#[derive(Debug, PartialEq)]
pub struct Line {
    /// As written: pip is given this, and expands `${VAR}`s itself, so no
    /// secret from the environment is written into the cache.
    pub text: String,
    /// With `${VAR}`s expanded as pip will: what is checked and hashed.
    pub expanded: String,
}

impl Requirements {
    /// Reads and checks the dependency lists of the plugin in `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Requirements> {
        let root =
            std::fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut reader = Reader {
            root,
            seen: HashSet::new(),
            found: Requirements::default(),
        };
        let txt = dir.join("requirements.txt");
        if txt.is_file() {
            reader.file(&txt, Kind::Requirements)?;
        }
        let pyproject = dir.join("pyproject.toml");
        if pyproject.is_file() {
            let text = std::fs::read_to_string(&pyproject)
                .with_context(|| format!("reading {}", pyproject.display()))?;
            let doc: toml::Table = toml::from_str(&text)
                .with_context(|| format!("parsing {}", pyproject.display()))?;
            if let Some(deps) = doc.get("project").and_then(|p| p.get("dependencies")) {
                let deps = deps.as_array().with_context(|| {
                    format!(
                        "{}: [project] dependencies is not a list",
                        pyproject.display()
                    )
                })?;
                for dep in deps {
                    let dep = dep.as_str().with_context(|| {
                        format!(
                            "{}: a [project] dependency is not a string: {dep}",
                            pyproject.display()
                        )
                    })?;
                    let line = dependency(dep).with_context(|| {
                        format!(
                            "{}: [project] dependency `{}`",
                            pyproject.display(),
                            dep.escape_debug()
                        )
                    })?;
                    reader.found.lines.push(line);
                }
            }
        }
        let mut found = reader.found;
        found.lines.retain(|line| !names_the_sdk(&line.expanded));
        Ok(found)
    }

    /// What identifies the installed dependencies: every line pip acts on.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for line in &self.lines {
            key.push_str(&line.expanded);
            key.push('\n');
        }
        if !self.constraints.is_empty() {
            key.push_str("\0constraints\n");
            for line in &self.constraints {
                key.push_str(&line.expanded);
                key.push('\n');
            }
        }
        key
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The requirements file pip is given.
    pub fn pip_text(&self) -> String {
        self.lines.iter().map(|l| format!("{}\n", l.text)).collect()
    }

    /// The constraints file pip is given, if any constraints were included.
    pub fn constraints_text(&self) -> Option<String> {
        (!self.constraints.is_empty()).then(|| {
            self.constraints
                .iter()
                .map(|l| format!("{}\n", l.text))
                .collect()
        })
    }
}

/// What a file's lines are to pip.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Requirements,
    Constraints,
}

/// Reads a requirements file and those it includes.
struct Reader {
    /// The plugin folder, resolved: no file outside it is read.
    root: PathBuf,
    /// Files read already (resolved): each is read once, so a cycle ends.
    seen: HashSet<PathBuf>,
    found: Requirements,
}

impl Reader {
    fn file(&mut self, path: &Path, kind: Kind) -> anyhow::Result<()> {
        let resolved =
            std::fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
        if !resolved.starts_with(&self.root) {
            bail!(
                "{} is outside the plugin folder {}: a requirements file may include only files \
                 inside it (they are part of the plugin)",
                path.display(),
                self.root.display()
            );
        }
        if !self.seen.insert(resolved.clone()) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&resolved)
            .with_context(|| format!("reading {}", path.display()))?;
        for (number, text) in logical_lines(&text) {
            let expanded = expand_env(&text);
            let at = || {
                format!(
                    "{} line {number} (`{}`)",
                    path.display(),
                    text.escape_debug()
                )
            };
            match parse_line(&expanded).with_context(at)? {
                Entry::Use => {
                    let line = Line { text, expanded };
                    match kind {
                        Kind::Requirements => self.found.lines.push(line),
                        Kind::Constraints => self.found.constraints.push(line),
                    }
                }
                Entry::Include { file, constraint } => {
                    let base = path.parent().unwrap_or(Path::new("."));
                    let included = base.join(&file);
                    let kind = if constraint { Kind::Constraints } else { kind };
                    self.file(&included, kind).with_context(at)?;
                }
            }
        }
        Ok(())
    }
}

/// A `[project] dependencies` entry: one requirement, written as one line.
fn dependency(dep: &str) -> anyhow::Result<Line> {
    if dep.chars().any(is_line_break) || dep.trim_end().ends_with('\\') {
        bail!("a dependency is one line");
    }
    let text = strip_comment(dep).trim().to_string();
    let expanded = expand_env(&text);
    match parse_line(&expanded)? {
        Entry::Use if !expanded.starts_with('-') => Ok(Line { text, expanded }),
        _ => bail!("a dependency is a requirement, not a pip option"),
    }
}

/// What a checked line does.
#[derive(Debug, PartialEq)]
enum Entry {
    /// Given to pip as it is.
    Use,
    /// `-r FILE` or `-c FILE`: read and inlined here.
    Include { file: String, constraint: bool },
}

/// Checks one logical line (`${VAR}`s expanded) as pip would split it: a
/// requirement and its options, or a line of options only.
fn parse_line(line: &str) -> anyhow::Result<Entry> {
    let (args, options) = break_args_options(line);
    let tokens = shell_words(&options)?;
    let options = options_of(&tokens)?;
    if !args.is_empty() {
        check_requirement(&args)?;
        if let Some((option, _)) = options.iter().find(|(o, _)| *o != Opt::Hash) {
            bail!(
                "only --hash may follow a requirement on its line, not {}",
                option.name()
            );
        }
        return Ok(Entry::Use);
    }
    let mut include = None;
    for (option, value) in &options {
        if let Some(file) = check_option(*option, value.as_deref())? {
            include = Some((*option, file));
        }
    }
    match include {
        Some((option, _)) if options.len() > 1 => {
            bail!("write {} on a line of its own", option.name())
        }
        Some((option, file)) => Ok(Entry::Include {
            file,
            constraint: option == Opt::Constraint,
        }),
        None => Ok(Entry::Use),
    }
}

/// The options pip reads in a requirements file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Opt {
    IndexUrl,
    ExtraIndexUrl,
    NoIndex,
    Constraint,
    Requirement,
    Editable,
    FindLinks,
    NoBinary,
    OnlyBinary,
    PreferBinary,
    RequireHashes,
    Pre,
    TrustedHost,
    UseFeature,
    GlobalOption,
    Hash,
    ConfigSettings,
}

/// Each option's long names, short name and whether it takes a value.
const OPTIONS: &[(Opt, &[&str], Option<char>, bool)] = &[
    (
        Opt::IndexUrl,
        &["--index-url", "--pypi-url"],
        Some('i'),
        true,
    ),
    (Opt::ExtraIndexUrl, &["--extra-index-url"], None, true),
    (Opt::NoIndex, &["--no-index"], None, false),
    (Opt::Constraint, &["--constraint"], Some('c'), true),
    (Opt::Requirement, &["--requirement"], Some('r'), true),
    (Opt::Editable, &["--editable"], Some('e'), true),
    (Opt::FindLinks, &["--find-links"], Some('f'), true),
    (Opt::NoBinary, &["--no-binary"], None, true),
    (Opt::OnlyBinary, &["--only-binary"], None, true),
    (Opt::PreferBinary, &["--prefer-binary"], None, false),
    (Opt::RequireHashes, &["--require-hashes"], None, false),
    (Opt::Pre, &["--pre"], None, false),
    (Opt::TrustedHost, &["--trusted-host"], None, true),
    (Opt::UseFeature, &["--use-feature"], None, true),
    (Opt::GlobalOption, &["--global-option"], None, true),
    (Opt::Hash, &["--hash"], None, true),
    (Opt::ConfigSettings, &["--config-settings"], Some('C'), true),
];

impl Opt {
    fn name(self) -> &'static str {
        OPTIONS
            .iter()
            .find(|(o, ..)| *o == self)
            .map_or("?", |(_, names, ..)| names[0])
    }
}

/// The options and their values in `tokens`, as pip's option parser reads
/// them, except that a long option must be written in full (pip takes any
/// unambiguous prefix; refusing them keeps this list the whole truth).
fn options_of(tokens: &[String]) -> anyhow::Result<Vec<(Opt, Option<String>)>> {
    let mut found = Vec::new();
    let mut tokens = tokens.iter();
    while let Some(token) = tokens.next() {
        let (spec, attached) = if let Some(long) = token.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
                None => (token.clone(), None),
            };
            let Some(spec) = OPTIONS
                .iter()
                .find(|(_, names, ..)| names.contains(&&*name))
            else {
                let meant = OPTIONS
                    .iter()
                    .flat_map(|(_, names, ..)| names.iter())
                    .find(|full| name.len() > 2 && full.starts_with(&name));
                match meant {
                    Some(full) => bail!("write `{full}` in full, not `{name}`"),
                    None => bail!("`{name}` is not an option pip reads in a requirements file"),
                }
            };
            if !spec.3 && value.is_some() {
                bail!("{name} takes no value");
            }
            (spec, value)
        } else if let Some(short) = token.strip_prefix('-') {
            let mut chars = short.chars();
            let letter = chars.next();
            let Some(spec) = OPTIONS
                .iter()
                .find(|(.., s, _)| *s == letter && s.is_some())
            else {
                bail!("`{token}` is not an option pip reads in a requirements file");
            };
            let rest = chars.as_str();
            (spec, (!rest.is_empty()).then(|| rest.to_string()))
        } else {
            bail!("`{token}` is neither an option nor part of one");
        };
        let (option, _, _, takes_value) = *spec;
        let value = match (takes_value, attached) {
            (false, _) => None,
            (true, Some(value)) => Some(value),
            (true, None) => Some(
                tokens
                    .next()
                    .with_context(|| format!("{} needs a value", option.name()))?
                    .clone(),
            ),
        };
        found.push((option, value));
    }
    Ok(found)
}

/// Whether an option may stand on a line of its own; for `-r`/`-c`, the file.
fn check_option(option: Opt, value: Option<&str>) -> anyhow::Result<Option<String>> {
    let value = value.unwrap_or("");
    let https = value
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    match option {
        Opt::NoIndex | Opt::PreferBinary | Opt::RequireHashes | Opt::Pre => Ok(None),
        Opt::OnlyBinary if value == ":all:" => Ok(None),
        Opt::IndexUrl | Opt::ExtraIndexUrl | Opt::FindLinks if https => Ok(None),
        Opt::IndexUrl | Opt::ExtraIndexUrl | Opt::FindLinks => bail!(
            "{} must be an https:// URL: over plain http anyone on the way can swap the \
             packages, and a local folder's wheels are not part of what the build is keyed on",
            option.name()
        ),
        Opt::Requirement | Opt::Constraint if is_url(value) => bail!(
            "{} from a URL is not part of what the build is keyed on: copy the file into the \
             plugin folder",
            option.name()
        ),
        Opt::Requirement | Opt::Constraint => Ok(Some(value.to_string())),
        Opt::OnlyBinary => bail!(
            "--only-binary {value} would loosen the build's --only-binary=:all: (`:none:` lets \
             pip build from source); wheels are all it installs already: remove the line"
        ),
        Opt::NoBinary => bail!(
            "--no-binary makes pip build packages from source, running their setup.py on this \
             machine; a plugin's dependencies are installed as wheels only"
        ),
        Opt::Editable => bail!(
            "-e installs a project from its source, running its build on this machine; list \
             the package by name (installed as a wheel), or put its modules in the plugin folder"
        ),
        Opt::TrustedHost => bail!(
            "--trusted-host turns off certificate checks for a host, so anyone on the way could \
             swap the packages"
        ),
        Opt::UseFeature => bail!(
            "--use-feature changes how pip installs; the build runs pip with its own settings"
        ),
        Opt::GlobalOption | Opt::ConfigSettings => bail!(
            "{} passes settings to a package's build, and nothing is built from source",
            option.name()
        ),
        Opt::Hash => bail!("--hash goes after a requirement, on its line"),
    }
}

/// Checks a requirement (what comes before its options): a name with extras,
/// versions and markers, or `name @ https://...whl`. Anything pip would build
/// from source, or read from a path, is refused.
fn check_requirement(args: &str) -> anyhow::Result<()> {
    let spec = args.split(';').next().unwrap_or("").trim();
    if let Some((name, url)) = spec.split_once('@') {
        check_name(name.trim())?;
        return check_direct_url(url.trim());
    }
    if is_url(spec) || spec.contains(['/', '\\']) || spec.starts_with(['.', '~']) {
        return check_direct_url(spec);
    }
    check_name(spec)
}

/// `name[extras] versions`, with nothing that pip would take for a file.
fn check_name(spec: &str) -> anyhow::Result<()> {
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    let valid_name = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        bail!("not a requirement pip can install as a wheel: expected a package name first");
    }
    const ARCHIVES: [&str; 12] = [
        ".whl",
        ".zip",
        ".tar",
        ".tar.gz",
        ".tgz",
        ".tar.bz2",
        ".tbz",
        ".tar.xz",
        ".txz",
        ".tlz",
        ".tar.lz",
        ".tar.lzma",
    ];
    let lower = name.to_ascii_lowercase();
    if ARCHIVES.iter().any(|a| lower.ends_with(a)) {
        bail!(
            "`{name}` names a file, which pip would install from a path; list the package by name"
        );
    }
    let mut rest = spec[name_end..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let (inside, after) = extras
            .split_once(']')
            .context("an extras list `[` has no `]`")?;
        if !inside.chars().all(|c| {
            c.is_ascii_alphanumeric() || c.is_whitespace() || matches!(c, ',' | '.' | '_' | '-')
        }) {
            bail!("unexpected characters in the extras `[{inside}]`");
        }
        rest = after;
    }
    let version = |c: char| {
        c.is_ascii_alphanumeric()
            || c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '=' | '!' | '~' | ',' | '.' | '*' | '+' | '_' | '-' | '(' | ')'
            )
    };
    if let Some(bad) = rest.chars().find(|c| !version(*c)) {
        let shown = if bad.is_control() || bad.is_whitespace() {
            bad.escape_unicode().to_string()
        } else {
            bad.to_string()
        };
        bail!(
            "unexpected `{shown}` after the package name: a requirement is a name, extras, \
             versions and markers (after `;`)"
        );
    }
    Ok(())
}

/// A direct reference is accepted only as an `https://` URL of a wheel: an
/// sdist, a VCS checkout or a local folder is built on this machine, and a
/// local file is not part of what the build is keyed on.
fn check_direct_url(url: &str) -> anyhow::Result<()> {
    let lower = url.to_ascii_lowercase();
    let path = lower.split(['#', '?']).next().unwrap_or("");
    if lower.starts_with("https://") && path.ends_with(".whl") {
        return Ok(());
    }
    if !is_url(url) {
        bail!(
            "a local path is installed from source (or, if a wheel, is not part of what the \
             build is keyed on): list the package by name, or as `name @ https://...whl`"
        );
    }
    if lower.starts_with("https://") {
        bail!(
            "a direct URL to anything but a wheel (.whl) is built from source, running its \
             setup.py on this machine"
        );
    }
    bail!(
        "only `https://` URLs of wheels are installed: a VCS or file URL is built from source, \
         and over plain http anyone on the way can swap the package"
    )
}

/// Whether pip would take `text` for a URL: `scheme:` or `scheme+vcs:`.
fn is_url(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    scheme.len() > 1
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// pip's `break_args_options`: the line split on single spaces; the
/// requirement is every token before the first that starts with `-`.
fn break_args_options(line: &str) -> (String, String) {
    let tokens: Vec<&str> = line.split(' ').collect();
    let first_option = tokens
        .iter()
        .position(|t| t.starts_with('-'))
        .unwrap_or(tokens.len());
    (
        tokens[..first_option].join(" "),
        tokens[first_option..].join(" "),
    )
}

/// Python's `shlex.split` (POSIX mode), which pip splits options with.
fn shell_words(text: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => bail!("a quote (') is not closed"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => bail!("a quote (\") is not closed"),
                        },
                        Some(c) => w.push(c),
                        None => bail!("a quote (\") is not closed"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => bail!("the line ends with an escape (\\)"),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Python's `str.splitlines` breaks lines at these, and pip reads files with it.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// pip's `COMMENT_RE.match`: a line that is a comment.
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// pip's comment removal: from a `#` at the start or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut previous_blank = true;
    for (at, c) in line.char_indices() {
        if c == '#' && previous_blank {
            return &line[..at];
        }
        previous_blank = c.is_whitespace();
    }
    line
}

/// The file's logical lines with their first line's number, as pip makes
/// them: split as `str.splitlines` does, a line ending in `\` joined with the
/// next (unless it is a comment), comments removed, blank lines dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut physical: Vec<&str> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.char_indices().find(|(_, c)| is_line_break(*c)) {
            Some((at, c)) => {
                physical.push(&rest[..at]);
                let skip = if c == '\r' && rest[at + 1..].starts_with('\n') {
                    2
                } else {
                    c.len_utf8()
                };
                rest = &rest[at + skip..];
            }
            None => {
                physical.push(rest);
                rest = "";
            }
        }
    }
    let mut joined: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in physical.into_iter().enumerate() {
        let number = index + 1;
        if !line.ends_with('\\') || is_comment(line) {
            let line = if is_comment(line) {
                format!(" {line}")
            } else {
                line.to_string()
            };
            match pending.take() {
                Some((first, mut text)) => {
                    text.push_str(&line);
                    joined.push((first, text));
                }
                None => joined.push((number, line)),
            }
        } else {
            let part = line.trim_matches('\\');
            match &mut pending {
                Some((_, text)) => text.push_str(part),
                None => pending = Some((number, part.to_string())),
            }
        }
    }
    joined.extend(pending);
    joined
        .into_iter()
        .map(|(number, line)| (number, strip_comment(&line).trim().to_string()))
        .filter(|(_, line)| !line.is_empty())
        .collect()
}

/// pip's `${NAME}` expansion (upper-case letters, digits, `_`), from our
/// environment, which is pip's: a variable unset or empty is left as written.
fn expand_env(line: &str) -> String {
    expand(line, &|name| std::env::var_os(name))
}

/// [`expand_env`] with `lookup` for the environment.
fn expand(line: &str, lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> String {
    let mut out = line.to_string();
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if !name.is_empty() && after[name_len..].starts_with('}') {
            if let Some(value) = lookup(name).filter(|v| !v.is_empty()) {
                out = out.replace(&format!("${{{name}}}"), &value.to_string_lossy());
            }
            rest = &after[name_len + 1..];
        } else {
            rest = after;
        }
    }
    out
}

/// Whether a requirement line names the `optech-sdk` distribution.
fn names_the_sdk(line: &str) -> bool {
    let name: String = line
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    name.to_ascii_lowercase().replace(['_', '.'], "-") == "optech-sdk"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::folder_with as plugin;

    fn refusal(files: &[(&str, &str)]) -> String {
        let dir = plugin(files);
        match Requirements::read(dir.path()) {
            Ok(found) => panic!("accepted {files:?} as {found:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn requirements_come_from_both_files_without_the_sdk() {
        let dir = plugin(&[
            (
                "requirements.txt",
                "# deps\npython-dateutil==2.9.0.post0  # dates\n\noptech-sdk>=0.1\n-r more.txt\n",
            ),
            ("more.txt", "attrs\n"),
            (
                "pyproject.toml",
                "[project]\nname = \"x\"\ndependencies = [\"six\", \"Optech_SDK\"]\n",
            ),
        ]);
        let found = Requirements::read(dir.path()).unwrap();
        let lines: Vec<&str> = found.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(lines, ["python-dateutil==2.9.0.post0", "attrs", "six"]);
        assert_eq!(found.key(), "python-dateutil==2.9.0.post0\nattrs\nsix\n");
        assert_eq!(
            Requirements::read(tempfile::tempdir().unwrap().path()).unwrap(),
            Requirements::default()
        );
    }

    #[test]
    fn lines_that_would_build_from_source_or_weaken_the_wheels_policy_are_refused() {
        for (line, why) in [
            (
                "--no-binary :all:",
                "--no-binary makes pip build packages from source",
            ),
            ("--no-binary=:all:", "--no-binary"),
            ("--no-binary six", "--no-binary"),
            ("--no-bin :all:", "write `--no-binary` in full"),
            (
                "six --no-binary :all:",
                "only --hash may follow a requirement",
            ),
            (
                "--only-binary :none:",
                "would loosen the build's --only-binary=:all:",
            ),
            ("--only-binary six", "--only-binary"),
            ("-e ./lib", "-e installs a project from its source"),
            ("--editable=git+https://example.com/x.git", "-e installs"),
            ("-e.", "-e installs"),
            ("--trusted-host example.com", "turns off certificate checks"),
            (
                "--index-url http://example.com/simple",
                "must be an https:// URL",
            ),
            ("-ihttp://example.com/simple", "must be an https:// URL"),
            ("--extra-index-url http://example.com/simple", "https://"),
            ("--find-links ./wheels", "https://"),
            ("-f /srv/wheels", "https://"),
            ("--use-feature=truststore", "--use-feature"),
            (
                "--global-option=--x",
                "passes settings to a package's build",
            ),
            ("six -C k=v", "only --hash may follow"),
            ("--hash=sha256:abc", "--hash goes after a requirement"),
            ("-r https://example.com/r.txt", "from a URL"),
            ("-r more.txt --pre", "on a line of its own"),
            ("--pre six", "neither an option"),
            (
                "git+https://github.com/x/y.git",
                "a VCS or file URL is built from source",
            ),
            ("y @ git+https://github.com/x/y.git", "a VCS or file URL"),
            (
                "six @ https://example.com/six-1.16.0.tar.gz",
                "anything but a wheel",
            ),
            (
                "six @ http://example.com/six-1.16.0-py3-none-any.whl",
                "plain http",
            ),
            ("six @ file:///tmp/six-1.16.0-py3-none-any.whl", "file URL"),
            ("./lib", "a local path"),
            ("lib/", "a local path"),
            ("six-1.16.0.tar.gz", "names a file"),
            ("six-1.16.0-py3-none-any.whl", "names a file"),
            ("six==1.0'", "unexpected `'`"),
            ("--nonsense", "not an option pip reads"),
        ] {
            let said = refusal(&[("requirements.txt", &format!("six\n{line}\n"))]);
            assert!(
                said.contains("requirements.txt line 2") && said.contains(why),
                "{line}: {said}"
            );
        }
        // A continued line is one line to pip, and reported by its first.
        let said = refusal(&[("requirements.txt", "six \\\n  --no-binary :all:\n")]);
        assert!(said.contains("requirements.txt line 1"), "{said}");
        // A [project] dependency is one requirement: no options, no second line.
        for dep in [
            "--no-binary :all:",
            "six\\n--no-binary :all:",
            "six \\\\",
            "./lib",
        ] {
            let said = refusal(&[(
                "pyproject.toml",
                &format!("[project]\nname = \"x\"\ndependencies = [\"{dep}\"]\n"),
            )]);
            assert!(said.contains("[project] dependency"), "{dep}: {said}");
        }
    }

    #[test]
    fn lines_that_keep_to_wheels_from_https_are_accepted() {
        let accepted = [
            "six==1.16.0",
            "python-dateutil>=2.8,<3; python_version >= \"3.8\"",
            "requests[socks, security] ~= 2.31",
            "attrs (>=22)",
            "idna==3.6 --hash=sha256:c05567e9c24a6b9faaa835c4821bad0590fbb9d5779e7caa6e1cc4978e7eb24f",
            "--index-url https://pypi.example.com/simple",
            "-i https://pypi.example.com/simple",
            "--extra-index-url=https://wheels.example.com/simple",
            "--find-links https://wheels.example.com/",
            "--pre",
            "--prefer-binary",
            "--only-binary=:all:",
            "--only-binary :all:",
            "--require-hashes",
            "--no-index --find-links https://wheels.example.com/",
            "six @ https://files.example.com/six-1.16.0-py2.py3-none-any.whl#sha256=abc",
            "https://files.example.com/attrs-23.2.0-py3-none-any.whl",
        ];
        let dir = plugin(&[("requirements.txt", &accepted.join("\n"))]);
        let found = Requirements::read(dir.path()).unwrap();
        let lines: Vec<&str> = found.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(lines, accepted);
    }

    #[test]
    fn included_files_are_read_into_the_key_each_once() {
        let dir = plugin(&[
            ("requirements.txt", "six\n-r reqs/more.txt\n-c pins.txt\n"),
            ("reqs/more.txt", "attrs\n-r deeper.txt\n"),
            // A cycle, and a file included twice: each is read once.
            (
                "reqs/deeper.txt",
                "idna\n-r ../requirements.txt\n-r more.txt\n",
            ),
            ("pins.txt", "attrs==23.2.0\n"),
        ]);
        let key = |dir: &Path| Requirements::read(dir).unwrap().key();
        let first = key(dir.path());
        std::fs::write(dir.path().join("reqs/deeper.txt"), "idna==3.6\n").unwrap();
        let second = key(dir.path());
        assert_ne!(first, second, "a change to a file -r includes");
        std::fs::write(dir.path().join("pins.txt"), "attrs==23.1.0\n").unwrap();
        let third = key(dir.path());
        assert_ne!(second, third, "a change to a file -c includes");
        assert_eq!(first, "six\nattrs\nidna\n\0constraints\nattrs==23.2.0\n");
        assert_eq!(
            third,
            "six\nattrs\nidna==3.6\n\0constraints\nattrs==23.1.0\n"
        );
    }

    #[test]
    fn a_bad_line_in_an_included_file_is_refused_naming_that_file() {
        let said = refusal(&[
            ("requirements.txt", "six\n-r more.txt\n"),
            ("more.txt", "attrs\n\n--no-binary :all:\n"),
        ]);
        assert!(
            said.contains("more.txt line 3") && said.contains("requirements.txt line 2"),
            "{said}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn files_outside_the_plugin_folder_are_not_included() {
        let project = tempfile::tempdir().unwrap();
        let outside = project.path().join("outside.txt");
        std::fs::write(&outside, "six\n").unwrap();
        let dir = project.path().join("plugin");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("linked.txt")).unwrap();
        for line in [
            "-r ../outside.txt".to_string(),
            format!("-r {}", outside.display()),
            "-c linked.txt".to_string(),
        ] {
            std::fs::write(dir.join("requirements.txt"), format!("{line}\n")).unwrap();
            let said = format!("{:#}", Requirements::read(&dir).unwrap_err());
            assert!(said.contains("outside the plugin folder"), "{line}: {said}");
        }
    }

    #[test]
    fn lines_are_split_joined_and_stripped_as_pip_does() {
        let text = "\u{feff}a # c\r\nb \\\n  c\\\n d\n# x \\\ne\x0cf#g\n\n  \t\n";
        let expected: Vec<(usize, String)> = [(1, "a"), (2, "b   c d"), (6, "e"), (7, "f#g")]
            .into_iter()
            .map(|(n, l)| (n, l.to_string()))
            .collect();
        assert_eq!(logical_lines(text), expected);
        assert_eq!(
            shell_words(r#"--a "b c" 'd e' f\ g "h\"i""#).unwrap(),
            ["--a", "b c", "d e", "f g", "h\"i"]
        );
        assert!(shell_words("'open").is_err());
        assert_eq!(
            break_args_options("six >=1 --hash=x"),
            ("six >=1".to_string(), "--hash=x".to_string())
        );
    }

    #[test]
    fn variables_are_expanded_as_pip_does_before_the_check() {
        let env = |name: &str| match name {
            "PLAIN" => Some("http://plain.example.com/simple".into()),
            "SAFE" => Some("https://pypi.example.com/simple".into()),
            "EMPTY" => Some("".into()),
            _ => None,
        };
        assert_eq!(
            expand("--index-url ${SAFE} ${UNSET} ${EMPTY} ${lower} $SAFE", &env),
            "--index-url https://pypi.example.com/simple ${UNSET} ${EMPTY} ${lower} $SAFE"
        );
        let plain = expand("--index-url ${PLAIN}", &env);
        let said = format!("{:#}", parse_line(&plain).unwrap_err());
        assert!(said.contains("must be an https:// URL"), "{said}");
        assert_eq!(
            parse_line(&expand("--index-url ${SAFE}", &env)).unwrap(),
            Entry::Use
        );
    }
}
