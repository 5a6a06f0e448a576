//! The files of a new TypeScript or JavaScript plugin (`optech new NAME --lang
//! ts|js`): a `package.json` depending on `optech-sdk`, a handler, and its unit
//! test with `optech-sdk/testing`, run by `npm test` in Node.

use std::path::Path;

/// `file:../../sdk-js` when an optech checkout holds `dir` (the SDK beside
/// it, as the example plugins have it), else the SDK's version from npm.
pub fn sdk_dependency(dir: &Path) -> anyhow::Result<String> {
    Ok(
        match super::checkout::sdk_in_checkout(
            dir,
            "sdk-js",
            "package.json",
            "\"name\": \"optech-sdk\"",
        )? {
            Some(path) => format!("file:{path}"),
            None => format!("^{}", env!("CARGO_PKG_VERSION")),
        },
    )
}

/// The plugin's files: `(path, text)`, for TypeScript or plain JavaScript.
pub fn files(name: &str, sdk: &str, typescript: bool) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("package.json", package_json(name, sdk, typescript)),
        (".gitignore", "node_modules/\n".to_string()),
    ];
    if typescript {
        files.push(("tsconfig.json", TSCONFIG.to_string()));
        files.push(("src/index.ts", handler(name)));
        files.push(("test/index.test.ts", unit_test(name, "../src/index.ts")));
    } else {
        files.push(("src/index.js", handler(name)));
        files.push(("test/index.test.js", unit_test(name, "../src/index.js")));
    }
    files
}

fn package_json(name: &str, sdk: &str, typescript: bool) -> String {
    let scripts = if typescript {
        r#""test": "tsx --test test/*.test.ts",
    "check": "tsc --noEmit""#
    } else {
        r#""test": "node --test test/""#
    };
    let dev = if typescript {
        r#",
  "devDependencies": {
    "@types/node": "^20.11.0",
    "tsx": "4.20.6",
    "typescript": "5.9.3"
  }"#
    } else {
        ""
    };
    format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    {scripts}
  }},
  "dependencies": {{
    "optech-sdk": "{sdk}"
  }}{dev}
}}
"#
    )
}

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "lib": ["ES2022"],
    "types": ["node"],
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "skipLibCheck": true
  },
  "include": ["src", "test"]
}
"#;

/// The same handler in TypeScript and JavaScript: the code has no types to strip.
fn handler(name: &str) -> String {
    format!(
        r#"// The `{name}` plugin: answers OpTech data requests for the keys mapped to it
// in optech.toml. `optech build` turns this file into plugins/{name}.wasm.
import {{ handler, config, log }} from "optech-sdk";

export const handle = handler(async (req) => {{
  // A missing input is the caller's mistake: answered 400 invalid_input.
  const name = req.inputs.require("name");
  // From [plugins.{name}.config] in optech.toml.
  const greeting = config("greeting") ?? "hello";
  log.info(`greeting ${{name}}`);
  // A back end is one fetch() away, to the hosts in the plugin's allowed_hosts:
  //   const res = await fetch(`${{config("base_url")}}/customers/${{name}}`);
  // State that outlives a request goes in a bucket that `stores` grants in
  // [plugins.{name}] of optech.toml (import {{ store }} from "optech-sdk"):
  //   const visits = store.open("visits").increment(name);
  // Throw new InvalidInput(...) for a 400; any other throw is a 500 plugin_error.
  return {{ message: `${{greeting}}, ${{name}}!`, key: req.key }};
}});
"#
    )
}

fn unit_test(name: &str, module: &str) -> String {
    format!(
        r#"// The handler's unit tests, in Node (no WebAssembly): `npm test`.
import assert from "node:assert/strict";
import {{ test }} from "node:test";

import {{ run }} from "optech-sdk/testing";
// The store is in memory here: `store.reset()` and `store.grant("visits")`
// from "optech-sdk/testing" set it up for a test.

import {{ handle }} from "{module}";

test("greets by name", async () => {{
  const out = await run(handle, {{ key: "{name}", inputs: {{ name: "Ada" }} }});
  assert.equal(out.status, 200);
  assert.deepEqual(out.data, {{ message: "hello, Ada!", key: "{name}" }});
}});

test("the greeting comes from the config", async () => {{
  const out = await run(handle, {{ inputs: {{ name: "Ada" }}, config: {{ greeting: "bonjour" }} }});
  assert.equal(out.data?.message, "bonjour, Ada!");
}});

test("a missing name is the caller's mistake", async () => {{
  const out = await run(handle, {{ inputs: {{}} }});
  assert.equal(out.status, 400);
  assert.equal(out.error?.message, "missing input `name`");
}});
"#
    )
}
