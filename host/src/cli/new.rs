//! `optech new NAME [--lang rust|ts|js|python]`: a plugin folder that builds,
//! with a unit test of its handler, and a key mapped to it in `optech.toml`
//! (comments kept).
//!
//! A Rust crate depends on the SDK by path inside the optech repository, so it
//! builds against the SDK next to it; anywhere else, by version, as a user's
//! own repository would; so does a TypeScript/JavaScript package (its files are
//! in `cli::new_js`). A Python folder needs no dependency line: `optech build`
//! brings the SDK (see `cli::new_python`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lang {
    /// A `cdylib` crate with the `optech-sdk` crate.
    #[default]
    Rust,
    /// A TypeScript package with the `optech-sdk` npm package.
    #[value(alias = "typescript")]
    Ts,
    /// A JavaScript package with the `optech-sdk` npm package.
    #[value(alias = "javascript")]
    Js,
    /// An `app.py` with the `optech-sdk` Python package.
    Python,
}

/// What `optech new` made.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub lang: Lang,
    /// How the plugin depends on the SDK: as written in its manifest, or
    /// where a Python plugin's comes from.
    pub sdk: String,
    /// Whether a key was added to the config (false when it was there already).
    pub mapped: bool,
}

/// Writes the plugin `name` in `lang` into `dir` and maps key `name` to it in
/// `config` (if that file exists).
pub fn create(name: &str, dir: &Path, config: &Path, lang: Lang) -> anyhow::Result<Created> {
    check_name(name)?;
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let sdk = match lang {
        Lang::Rust => {
            std::fs::create_dir_all(dir.join("src"))
                .with_context(|| format!("creating {}", dir.display()))?;
            let sdk = sdk_dependency(dir)?;
            write(&dir.join("Cargo.toml"), &manifest(name, &sdk))?;
            write(&dir.join("src/lib.rs"), &handler(name))?;
            write(&dir.join(".gitignore"), "/target\n")?;
            sdk
        }
        Lang::Ts | Lang::Js => {
            let sdk = super::new_js::sdk_dependency(dir)?;
            std::fs::create_dir_all(dir.join("src"))
                .with_context(|| format!("creating {}", dir.display()))?;
            std::fs::create_dir_all(dir.join("test"))
                .with_context(|| format!("creating {}", dir.display()))?;
            for (file, text) in super::new_js::files(name, &sdk, lang == Lang::Ts) {
                write(&dir.join(file), &text)?;
            }
            sdk
        }
        Lang::Python => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, text) in super::new_python::files(name) {
                write(&dir.join(file), &text)?;
            }
            "built in by optech build".to_string()
        }
    };
    let mapped = if config.is_file() {
        map_key(config, name)?
    } else {
        false
    };
    Ok(Created {
        dir: dir.to_path_buf(),
        lang,
        sdk,
        mapped,
    })
}

/// A plugin name is also a crate name, a file name and a config key.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{name:?} is not a plugin name: lowercase letters, digits, `-` and `_`, starting with a letter"
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `{ path = "../../sdk" }` when an optech checkout holds `dir`, else the
/// SDK's version.
fn sdk_dependency(dir: &Path) -> anyhow::Result<String> {
    Ok(
        match super::checkout::sdk_in_checkout(dir, "sdk", "Cargo.toml", "name = \"optech-sdk\"")? {
            Some(path) => format!("{{ path = \"{path}\" }}"),
            None => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
        },
    )
}

fn manifest(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
optech-sdk = {sdk}

# A plugin builds on its own, for wasm32-wasip2: `optech build`, or
# `cargo build --release --target wasm32-wasip2` here.
[workspace]
"#
    )
}

fn handler(name: &str) -> String {
    format!(
        r#"//! The `{name}` plugin: answers OpTech data requests for the keys mapped to it
//! in `optech.toml`.

use optech_sdk::{{Data, Error, Request, config}};

fn handle(req: Request) -> Result<Data, Error> {{
    // A missing input is the caller's mistake: answered 400 invalid_input.
    let name = req.inputs().require("name")?;
    // From `[plugins.{name}.config]` in optech.toml.
    let greeting = config("greeting").unwrap_or_else(|| "hello".into());
    // State that outlives a request goes in a bucket that `stores` grants in
    // [plugins.{name}] of optech.toml:
    //   let visits = optech_sdk::store::open("visits")?.increment(name, 1)?;
    Ok(Data::new()
        .with("message", format!("{{greeting}}, {{name}}!"))
        .with("key", req.key()))
}}

optech_sdk::export!(handle);

#[cfg(test)]
mod tests {{
    use super::*;
    use optech_sdk::Inputs;

    // Outside the host the store is in memory, per test thread:
    // optech_sdk::testing::clear_store() empties it.

    #[test]
    fn greets_by_name() {{
        let req = Request::new("{name}", Inputs::from_pairs([("name", "Ada")]));
        let data = handle(req).unwrap();
        assert_eq!(data.get("message"), Some("hello, Ada!"));
    }}

    #[test]
    fn the_greeting_comes_from_the_config() {{
        optech_sdk::testing::set_config("greeting", "bonjour");
        let data = handle(Request::new("{name}", Inputs::from_pairs([("name", "Ada")]))).unwrap();
        assert_eq!(data.get("message"), Some("bonjour, Ada!"));
    }}

    #[test]
    fn a_missing_name_is_the_callers_mistake() {{
        let err = handle(Request::new("{name}", Inputs::default())).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{{err:?}}");
    }}
}}
"#
    )
}

/// Adds `"name" = "name"` under `[keys]`, keeping the file's comments and
/// layout. `false` when that key is there already.
fn map_key(config: &Path, name: &str) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not TOML", config.display()))?;
    let keys = doc
        .entry("keys")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .with_context(|| format!("{}: `keys` is not a table", config.display()))?;
    if keys.contains_key(name) {
        return Ok(false);
    }
    keys.insert(name, toml_edit::value(name));
    let staging = config.with_extension("toml.tmp");
    write(&staging, &doc.to_string())?;
    std::fs::rename(&staging, config).with_context(|| format!("replacing {}", config.display()))?;
    Ok(true)
}

/// What `optech new` is told.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to put the plugin instead of `<plugins_dir>/NAME`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value = "optech.toml")]
    pub config: PathBuf,
}

/// `optech new`: the plugin's files and its key, then what to do next.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let NewArgs {
        name,
        lang,
        dir,
        config: config_path,
    } = args;
    let name = name.as_str();
    let config_path = config_path.as_path();
    let plugins_dir = super::lenient_config(config_path)
        .map(|c| c.server.plugins_dir)
        .unwrap_or_else(|_| PathBuf::from("plugins"));
    let dir = dir.unwrap_or_else(|| plugins_dir.join(name));
    let created = create(name, &dir, config_path, lang)?;
    println!(
        "created plugin `{name}` in {} (optech-sdk = {})",
        created.dir.display(),
        created.sdk
    );
    if created.mapped {
        println!("mapped key \"{name}\" to it in {}", config_path.display());
    }
    println!("\nnext:");
    let inside = std::path::absolute(&created.dir)
        .ok()
        .zip(std::path::absolute(&plugins_dir).ok())
        .is_some_and(|(d, p)| d.parent() == Some(p.as_path()));
    let (tests, needs) = match lang {
        Lang::Rust => ("cargo test", ""),
        Lang::Ts | Lang::Js => ("npm install && npm test", " (needs Node.js 20+)"),
        Lang::Python => ("pytest", " (needs Python 3)"),
    };
    println!(
        "  (cd {} && {tests})   # the handler's unit tests{}",
        created.dir.display(),
        if lang == Lang::Python {
            " (pip install optech-sdk pytest)"
        } else {
            ""
        }
    );
    if inside {
        println!(
            "  optech build                         # -> {}{needs}",
            plugins_dir.join(format!("{name}.wasm")).display()
        );
    } else if lang == Lang::Rust {
        println!(
            "  (cd {} && cargo build --release --target wasm32-wasip2)",
            created.dir.display()
        );
        println!(
            "  cp {}/target/wasm32-wasip2/release/{}.wasm {}/",
            created.dir.display(),
            name.replace('-', "_"),
            plugins_dir.display()
        );
    } else {
        println!(
            "  move {} into {}, then optech build{needs}",
            created.dir.display(),
            plugins_dir.display()
        );
    }
    println!(
        "  optech send {name} name=Ada            # against a running `optech serve` or `optech dev`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_added_and_comments_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("optech.toml");
        std::fs::write(
            &config,
            "# my host\n[keys]\n\"echo\" = \"echo\" # the echo\n",
        )
        .unwrap();
        assert!(map_key(&config, "demo").unwrap());
        assert!(!map_key(&config, "demo").unwrap());
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("# my host") && text.contains("# the echo"),
            "{text}"
        );
        assert!(text.contains("demo = \"demo\""), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["keys"]["demo"].as_str(), Some("demo"));
    }

    #[test]
    fn a_python_plugin_gets_its_files_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("optech.toml");
        std::fs::write(&config, "# mine\n[keys]\n").unwrap();
        let plugin = dir.path().join("plugins/greeter");
        let created = create("greeter", &plugin, &config, Lang::Python).unwrap();
        assert!(created.mapped);
        for file in ["app.py", "test_app.py", "requirements.txt", ".gitignore"] {
            assert!(plugin.join(file).is_file(), "{file}");
        }
        assert!(!plugin.join("Cargo.toml").exists());
        let app = std::fs::read_to_string(plugin.join("app.py")).unwrap();
        assert!(
            app.contains("@handler") && app.contains("[plugins.greeter.config]"),
            "{app}"
        );
        let tests = std::fs::read_to_string(plugin.join("test_app.py")).unwrap();
        assert!(tests.contains("key=\"greeter\""), "{tests}");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("# mine") && text.contains("greeter = \"greeter\""),
            "{text}"
        );
        // Not over a folder with something in it.
        assert!(create("greeter", &plugin, &config, Lang::Python).is_err());
    }

    #[test]
    fn a_typescript_plugin_gets_its_files_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("optech.toml");
        std::fs::write(&config, "# mine\n[keys]\n").unwrap();
        let plugin = dir.path().join("plugins/greeter");
        let created = create("greeter", &plugin, &config, Lang::Ts).unwrap();
        assert!(created.mapped);
        assert_eq!(created.sdk, format!("^{}", env!("CARGO_PKG_VERSION")));
        for file in [
            "package.json",
            "tsconfig.json",
            "src/index.ts",
            "test/index.test.ts",
            ".gitignore",
        ] {
            assert!(plugin.join(file).is_file(), "{file}");
        }
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(plugin.join("package.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["name"], "greeter");
        assert_eq!(manifest["dependencies"]["optech-sdk"], created.sdk);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains("# mine") && text.contains("greeter = \"greeter\""),
            "{text}"
        );
        // JavaScript: the same handler, no types, no tsconfig.
        let js = dir.path().join("plugins/plain");
        create("plain", &js, &config, Lang::Js).unwrap();
        assert!(js.join("src/index.js").is_file() && !js.join("tsconfig.json").exists());
        // Not over a folder with something in it.
        assert!(create("greeter", &plugin, &config, Lang::Ts).is_err());
    }

    #[test]
    fn inside_a_checkout_a_js_plugin_links_the_sdk_js_folder() {
        let inside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/demo");
        assert_eq!(
            super::super::new_js::sdk_dependency(&inside).unwrap(),
            "file:../../sdk-js"
        );
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "Demo", "1x", "a b", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("order-status_2").unwrap();
    }

    #[test]
    fn outside_a_checkout_the_sdk_comes_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = sdk_dependency(&dir.path().join("demo")).unwrap();
        assert_eq!(sdk, format!("\"{}\"", env!("CARGO_PKG_VERSION")));
        let inside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/demo");
        assert_eq!(sdk_dependency(&inside).unwrap(), "{ path = \"../../sdk\" }");
    }
}
